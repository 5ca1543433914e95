"""Virtual environments for the robot-environment tests: made with the Python versions this
machine has (on PATH or under pyenv), filled by pip, and driven as subprocesses. pip's own
cache keeps a second run fast; nothing here reaches anything but the package index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
PIP_TIMEOUT = 900   # a cold pip cache downloads OpenCV and numpy


def interpreter(version: str) -> str | None:
    """A working `python{version}` with venv, from PATH or pyenv; None when there is none."""
    candidates = [shutil.which(f"python{version}")]
    candidates += [str(p) for p in sorted(PYENV_VERSIONS.glob(f"{version}.*/bin/python{version}"))]
    for candidate in candidates:
        if not candidate:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


class Venv:
    """A venv at `path` made by `python`; every command runs outside the repository, so the
    source folders never shadow what was installed."""

    def __init__(self, python: str | None, path: Path) -> None:
        self.path = path
        if python is not None:
            subprocess.run([python, "-m", "venv", str(path)], check=True, timeout=300)
        self.python = str(path / "bin" / "python")
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    @classmethod
    def existing(cls, path: Path) -> Venv:
        """A venv someone else made at `path`."""
        return cls(None, path)

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(args, cwd=cwd or self.path, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def pip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(self.python, "-m", "pip", *args, timeout=PIP_TIMEOUT, check=check)

    def python_code(self, code: str, *args: str, timeout: float = 120) -> str:
        return self.run(self.python, "-c", code, *args, timeout=timeout).stdout

    def versions(self) -> dict[str, str]:
        """{canonical distribution name: version} of everything installed."""
        listing = json.loads(self.pip("list", "--format", "json").stdout)
        return {item["name"].lower().replace("_", "-"): item["version"] for item in listing}

    def cv2_providers(self) -> list[str]:
        """The distributions that install a top-level `cv2` package."""
        return json.loads(self.python_code(
            "import json\nfrom importlib import metadata\n"
            "print(json.dumps(sorted({d.metadata['Name'] for d in metadata.distributions()\n"
            "    if any(f.parts[0] == 'cv2' for f in (d.files or []))})))"))
