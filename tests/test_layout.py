"""The repository's shape and the command's edges: the design card's folders at the top, the
simulation kept out of production code, and subcommands that load only what they need."""

from __future__ import annotations

import ast
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from camfabric import cli
from tests.conftest import PYTHON, REPO, unused_tcp_port

PARTS = ("protocol", "capture_node", "gateway", "subscribers")
TOP_LEVEL = ("runtime", *PARTS)


def test_the_four_parts_and_their_runtime_are_top_level_folders_imported_under_camfabric():
    for part in TOP_LEVEL:
        assert (REPO / part / "__init__.py").is_file(), part
        module = __import__(f"camfabric.{part}", fromlist=["_"])
        assert module.__file__ == str(REPO / part / "__init__.py")
    assert not (REPO / "camfabric" / "protocol").exists()
    assert not (REPO / "camfabric" / "runtime.py").exists()



def test_every_relative_import_names_a_file_beside_it_on_disk():
    """`from ..runtime.logonce import LogOnce` in protocol/publisher.py must name
    runtime/logonce.py as a reader standing in protocol/ finds it: ../runtime/logonce.py."""
    missing = []
    for top in (*TOP_LEVEL, "camfabric"):
        for path in sorted((REPO / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ImportFrom) or not node.level:
                    continue
                folder = path.parent
                for _ in range(node.level - 1):
                    folder = folder.parent
                target = folder.joinpath(*(node.module or "").split(".")) if node.module else folder
                candidates = [target.with_suffix(".py"), target / "__init__.py"]
                candidates += [target / f"{alias.name}.py" for alias in node.names]
                if not any(c.is_file() for c in candidates):
                    dots = "." * node.level
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno} from {dots}{node.module or ''}")
    assert missing == []


def _imports(path) -> set[str]:
    """Absolute names of the modules `path` imports (relative imports resolved)."""
    package = "camfabric." + ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_no_production_package_imports_the_simulation():
    offenders = []
    for part in PARTS:
        for path in sorted((REPO / part).rglob("*.py")):
            if any(name == "camfabric.sim" or name.startswith("camfabric.sim.") for name in _imports(path)):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
    # capture_node knows the tabletop only as a registered source kind, by name
    registry = (REPO / "capture_node" / "sources" / "__init__.py").read_text()
    assert '"camfabric.sim.tabletop"' in registry


def test_keys_help_loads_neither_opencv_nor_the_http_stack():
    code = ("import sys\nfrom camfabric import cli\n"
            "try:\n    cli.main(['keys', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('cv2', 'falcon', 'waitress') if m in sys.modules))")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_top_level_help_matches_each_command_and_unknown_command_is_a_usage_error(capsys):
    for name, (_module, summary) in cli.SUBCOMMANDS.items():
        assert summary == cli.load_command(name).HELP, name
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "keys" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["bogus"])
    assert exc.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def _demo(*extra: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "camfabric.cli", "demo", *extra], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _python_catches_sigint(pid: int, timeout: float = 20.0) -> None:
    """Wait until the interpreter of `pid` has installed its Ctrl-C handler: before that, a
    SIGINT ends a process in Python's own start-up (-2, no traceback), before any camfabric code
    runs — which a loaded machine can stretch past half a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # not Linux, or the process is gone: press at once
            return
        caught = next((line.split()[1] for line in status.splitlines()
                       if line.startswith("SigCgt:")), None)
        if caught is None or int(caught, 16) & (1 << (signal.SIGINT - 1)):
            return
        time.sleep(0.005)


@pytest.mark.parametrize("after_s", [0.2, 0.6])
def test_ctrl_c_in_the_demos_first_second_exits_without_a_traceback(after_s):
    proc = _demo("--port", "0", "--node-port", "0", "--tracker-port", "0")
    _python_catches_sigint(proc.pid)
    time.sleep(after_s)  # into the demo's own start: imports, ports, threads
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    # 0: stopped cleanly; 130 or killed by SIGINT (-2 here, 130 in a shell's $?): interrupted.
    assert proc.returncode in (0, 130, -signal.SIGINT), err
    assert "Traceback" not in err


def test_demo_runs_beside_another_fabric_on_the_ports_it_is_given():
    ports = [unused_tcp_port() for _ in range(3)]
    # Something else already holds the default ports? The demo must not care.
    proc = _demo("--port", str(ports[0]), "--node-port", str(ports[1]), "--tracker-port", str(ports[2]))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "open http://" in line or not line:
                break
        assert f"http://127.0.0.1:{ports[0]}" in line, line or proc.stderr.read()
        answer = requests.get(f"http://127.0.0.1:{ports[0]}/cameras", timeout=10)
        assert sorted(answer.json()) == ["0", "1", "2"]
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err
