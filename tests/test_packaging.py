"""What `pip install .` (deploy/install.sh) puts on a machine: every part under the camfabric
namespace, the dashboard's files, and no top-level module with a generic name."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from camfabric.runtime.config import read_toml
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


# --- pyproject.toml's ranges and requirements.lock's pins -----------------------------------

LOCK = REPO / "requirements.lock"
LOCKED_PYTHONS = ("3.11", "3.12", "3.13")   # what the lock is for: make test, CI, the installer


def locked_versions() -> dict[str, str]:
    """requirements.lock as {canonical name: exact version}."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"requirements.lock: {line!r} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def _declared(extras: tuple[str, ...] = ("all", "test")) -> list[Requirement]:
    """pyproject.toml's requirements with `extras`, its own extras (camfabric[...]) expanded."""
    project = read_toml(REPO / "pyproject.toml")["project"]
    optional = project["optional-dependencies"]
    wanted, seen, out = list(extras), set(), [Requirement(r) for r in project["dependencies"]]
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in optional[extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "camfabric":
                wanted.extend(requirement.extras)
            else:
                out.append(requirement)
    return out


def _applies_to_locked_pythons(requirement: Requirement) -> bool:
    return requirement.marker is None or any(
        requirement.marker.evaluate({"python_version": v, "python_full_version": f"{v}.0"})
        for v in LOCKED_PYTHONS)


def test_every_declared_requirement_is_locked_at_a_version_its_range_allows():
    locked = locked_versions()
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        if not _applies_to_locked_pythons(requirement):
            continue
        assert name in locked, f"{requirement} is in pyproject.toml but not in requirements.lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]}, outside pyproject.toml's {requirement}")


def test_the_lock_pins_exactly_the_declared_requirements_and_what_they_need():
    # The closure is read from the metadata of what is installed here; the next test makes
    # sure that is the lock's own versions (in a `make test` venv).
    needed, todo = set(), [(r, ()) for r in _declared() if _applies_to_locked_pythons(r)]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": e}) for e in (extras or ("",))):
            continue
        if name in needed:
            continue
        needed.add(name)
        for text in metadata.requires(name) or []:
            todo.append((Requirement(text), tuple(requirement.extras)))
    assert set(locked_versions()) == needed, (
        f"missing from requirements.lock: {sorted(needed - set(locked_versions()))}; "
        f"locked but needed by nothing: {sorted(set(locked_versions()) - needed)}")


def test_a_make_test_venv_holds_exactly_the_locked_versions():
    # The Makefile copies the lock into .venv/.installed once it installed from it.
    stamp = Path(sys.prefix) / ".installed"
    if not stamp.is_file() or stamp.read_text() != LOCK.read_text():
        pytest.skip(f"{sys.prefix} was not installed by `make` from this requirements.lock")
    wrong = {name: (version, metadata.version(name)) for name, version in locked_versions().items()
             if metadata.version(name) != version}
    assert wrong == {}, "installed versions differ from the lock (locked, installed)"


def test_make_ci_and_the_installer_install_from_the_lock():
    assert "-c $(LOCK)" in (REPO / "Makefile").read_text()
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert "requirements.lock" in (REPO / "deploy" / "install.sh").read_text()
