"""What `pip install .` (deploy/install.sh) puts on a machine: every part under the camfabric
namespace, the dashboard's files, and no top-level module with a generic name."""

from __future__ import annotations

import subprocess
import zipfile

import pytest

from tests.conftest import PYTHON, REPO


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([PYTHON, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = out.glob("camfabric-*.whl")
    return zipfile.ZipFile(wheel).namelist()


def test_the_wheel_holds_every_part_under_camfabric_and_the_dashboard(wheel_names):
    for module in ("camfabric/cli.py", "camfabric/protocol/wire.py", "camfabric/capture_node/node.py",
                   "camfabric/gateway/server.py", "camfabric/subscribers/tracker/service.py",
                   "camfabric/subscribers/prusa_connect/uploader.py", "camfabric/sim/tabletop.py",
                   "camfabric/gateway/static/index.html", "camfabric/gateway/static/dashboard.js"):
        assert module in wheel_names, module
    top_level = {name.split("/")[0] for name in wheel_names}
    assert {name for name in top_level if not name.startswith("camfabric")} == set()
    assert not any(name.startswith("tests/") or name.startswith("benchmarks/") for name in wheel_names)


def test_every_package_on_disk_is_in_the_wheel(wheel_names):
    # A new folder that pyproject's package list forgot would be missing from installs only.
    for part in ("protocol", "capture_node", "gateway", "subscribers", "camfabric"):
        for init in (REPO / part).rglob("__init__.py"):
            relative = init.relative_to(REPO / part)
            installed = ("camfabric/" if part != "camfabric" else "") + f"{part}/{relative}"
            assert installed in wheel_names, installed
