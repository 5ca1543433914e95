"""deploy/install.sh staged under a temporary root: files in place, and a re-run keeps edits."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"
UNITS = sorted(p.name for p in (REPO / "deploy" / "systemd").glob("*.service"))


def run_install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROOT": str(root), "PYTHON": sys.executable, "CAMFABRIC_SKIP_PIP": "1"}
    return subprocess.run(["sh", str(INSTALL), *args], env=env, capture_output=True, text=True,
                          timeout=30)


def test_install_is_idempotent_and_never_overwrites_the_configuration(tmp_path):
    venv_bin = tmp_path / "opt" / "camfabric" / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)  # an existing venv is kept, not rebuilt

    first = run_install(tmp_path, "printer-pi")
    assert first.returncode == 0, first.stderr
    config = tmp_path / "etc" / "camfabric" / "camfabric.toml"
    assert config.read_text() == (REPO / "deploy" / "examples" / "printer-pi.toml").read_text()
    secrets = tmp_path / "etc" / "camfabric" / "secrets.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "etc" / "systemd" / "system").iterdir()) == UNITS
    assert UNITS == ["camfabric-gateway.service", "camfabric-node.service",
                     "camfabric-prusa-connect.service", "camfabric-timelapse.service",
                     "camfabric-tracker.service"]

    config.write_text(config.read_text() + "\n# edited by the administrator\n")
    secrets.write_text("PRUSA_CONNECT_TOKEN=abc\n")
    second = run_install(tmp_path, "robot-cell")
    assert second.returncode == 0, second.stderr
    assert "keeping existing" in second.stdout
    assert config.read_text().endswith("# edited by the administrator\n")
    assert secrets.read_text() == "PRUSA_CONNECT_TOKEN=abc\n"


def test_install_names_the_examples_when_one_is_misspelt(tmp_path):
    result = run_install(tmp_path, "robot-cel")
    assert result.returncode == 1
    assert "no example 'robot-cel'" in result.stderr and "robot-cell" in result.stderr


def test_units_run_the_camfabric_command_from_the_venv_and_stop_quickly():
    for unit in UNITS:
        text = (REPO / "deploy" / "systemd" / unit).read_text()
        service = unit.removeprefix("camfabric-").removesuffix(".service")
        assert (f"ExecStart=/opt/camfabric/venv/bin/camfabric {service} "
                "--config /etc/camfabric/camfabric.toml") in text
        assert "RestartPreventExitStatus=2" in text  # a config error is not retried forever
        assert "User=camfabric" in text and "TimeoutStopSec=5" in text
