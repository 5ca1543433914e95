"""deploy/install.sh's dependency step, staged under a scratch ROOT: on a machine PyPI has
wheels for, it installs requirements.lock's versions and says where each came from. (The path
through the distribution's packages needs apt and a 32-bit ARM machine: deploy/check-pi.sh
runs it in an emulated Pi userland; docs/pi-check/ has its results.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.install.venvs import Venv
from tests.test_packaging import locked_versions

pytestmark = pytest.mark.timeout(1200)

INSTALL = REPO / "deploy" / "install.sh"
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


def install(root, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    environment.update({"ROOT": str(root), "PYTHON": BASE_PYTHON, **env})
    return subprocess.run(["sh", str(INSTALL), *args], env=environment, capture_output=True,
                          text=True, timeout=1100)


def test_where_pypi_has_wheels_the_installer_installs_the_lock_and_says_so(tmp_path):
    result = install(tmp_path, "printer-pi")
    assert result.returncode == 0, result.stderr[-3000:]
    pins = locked_versions()
    said = next(line for line in result.stdout.splitlines() if "dependencies from" in line)
    assert "dependencies from PyPI wheels" in said
    assert f"numpy {pins['numpy']} (venv)" in said and f"pyzmq {pins['pyzmq']} (venv)" in said
    assert f"OpenCV {pins['opencv-python-headless'].rsplit('.', 1)[0]} (venv)" in said

    venv = Venv.existing(tmp_path / "opt" / "camfabric" / "venv")
    installed = venv.versions()
    for name in ("numpy", "pyzmq", "msgpack", "opencv-python-headless", "requests", "falcon",
                 "waitress", "prometheus-client"):
        assert installed[name] == pins[name], name
    assert "pytest" not in installed             # the services, not the test tools
    assert "include-system-site-packages = false" in (venv.path / "pyvenv.cfg").read_text()


def test_a_choice_of_dependencies_it_does_not_know_is_named(tmp_path):
    result = install(tmp_path, "printer-pi", CAMFABRIC_DEPS="conda")
    assert result.returncode == 1
    assert "CAMFABRIC_DEPS must be auto, pypi or system, not 'conda'" in result.stderr


def test_the_distribution_s_packages_are_not_staged_under_another_root(tmp_path):
    result = install(tmp_path, "printer-pi", CAMFABRIC_DEPS="system")
    assert result.returncode == 1
    assert "cannot be installed under ROOT" in result.stderr
