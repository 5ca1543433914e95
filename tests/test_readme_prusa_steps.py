"""The README's "Prusa Connect in five steps", followed word for word from a fresh clone in a
scratch root: the install gives a config whose `--check` fails naming the token until the token
is filled in, and passes once it is."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

TOKEN = "Zx9Yw8Vu7Ts6Rq5Po4Nm"  # the shape Connect issues: 20 letters and digits


def prusa_steps() -> list[str]:
    """The shell blocks of the README's Prusa section, in order."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Prusa Connect in five steps", 1)[1].split("\n### ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S)]


def fresh_clone(dest: Path) -> Path:
    """The tracked files of this checkout, as a clone would have them (modes included)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def in_root(command: str, root: Path) -> str:
    """A README command as it reads on the Pi, moved under the scratch root."""
    assert command.startswith("sudo "), command
    command = command.removeprefix("sudo ")
    for path in ("/etc/camfabric", "/opt/camfabric"):
        command = command.replace(path, f"{root}{path}")
    return command


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs a git checkout")
def test_the_readme_prusa_steps_give_a_config_that_checks_once_the_token_is_in(tmp_path):
    install, edit, check, start = prusa_steps()
    assert install == "sudo ./deploy/install.sh printer-pi"
    assert edit == "sudoedit /etc/camfabric/secrets.env"
    assert "--check" in check and start.startswith("sudo systemctl enable --now")

    clone = fresh_clone(tmp_path / "clone")
    root = tmp_path / "root"
    # The package is already installed in this test's venv: the install reuses it as its venv
    # instead of fetching from the network (CAMFABRIC_SKIP_PIP), and writes everything else.
    (root / "opt" / "camfabric").mkdir(parents=True)
    (root / "opt" / "camfabric" / "venv").symlink_to(Path(sys.prefix))
    env = {**os.environ, "ROOT": str(root), "CAMFABRIC_SKIP_PIP": "1", "PYTHON": sys.executable,
           "STATE_DIRECTORY": str(root / "var" / "lib" / "camfabric")}  # what the unit's systemd sets
    step2 = subprocess.run(in_root(install, root), shell=True, cwd=clone, env=env, capture_output=True,
                           text=True, timeout=120)
    assert step2.returncode == 0, step2.stderr
    config = root / "etc" / "camfabric" / "camfabric.toml"
    assert config.read_text() == (clone / "deploy" / "examples" / "printer-pi.toml").read_text()
    secrets = root / "etc" / "camfabric" / "secrets.env"
    assert secrets.stat().st_mode & 0o077 == 0  # root only
    for unit in start.split()[4:]:
        assert (root / "etc" / "systemd" / "system" / f"{unit}.service").is_file(), unit

    # Step 4 before step 3: the check names the missing token and nothing starts.
    before = subprocess.run(in_root(check, root), shell=True, env=env, capture_output=True, text=True,
                            timeout=60)
    assert before.returncode == 2
    assert "prusa_connect.cameras[0].token_env" in before.stderr and "PRUSA_CONNECT_TOKEN" in before.stderr

    # Step 3: the line the README says to add, in the file its sudoedit opens.
    target = Path(in_root("sudo " + edit.removeprefix("sudoedit "), root))
    assert target == secrets
    with secrets.open("a") as fh:
        fh.write(f"PRUSA_CONNECT_TOKEN={TOKEN}\n")

    after = subprocess.run(in_root(check, root), shell=True, env=env, capture_output=True, text=True,
                           timeout=60)
    assert after.returncode == 0, after.stderr
    assert "[prusa_connect] is valid (1 camera(s))" in after.stdout
    assert TOKEN not in after.stdout + after.stderr

    # A second install (an upgrade) keeps the filled-in secrets and the config.
    again = subprocess.run(in_root(install, root), shell=True, cwd=clone, env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "keeping existing" in again.stdout
    assert TOKEN in secrets.read_text()
