"""The repository's shape and the command's edges: the design card's folders at the top, the
simulation kept out of production code, and subcommands that load only what they need."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from camfabric import cli
from camfabric.protocol import DEFAULT_ENDPOINT, Subscriber
from tests.conftest import ENDPOINT, PYTHON, REPO, URL, Output

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


MODULE_PATH = re.compile(r"camfabric(\.[A-Za-z_]\w*)+")
CAMERA_NAMES = re.compile(r"VideoCapture|CAP_\w+|/dev/video\d*")


def _named_modules(path) -> set[str]:
    """Every module `path` reaches: its import statements, the string it hands to
    importlib.import_module or __import__, and any string that is a camfabric module path (a
    registry mapping a name to a module is an import by another route)."""
    names = _imports(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and MODULE_PATH.fullmatch(node.value):
            names.add(node.value)
    return names


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# What uses the parts (the command, keys, proxy, client, moonraker, demo, sim): no part uses it.
COMMAND_LAYER = tuple(sorted(
    f"camfabric.{p.stem}" for p in (REPO / "camfabric").iterdir()
    if p.stem != "__init__" and (p.suffix == ".py" or (p / "__init__.py").is_file())))
HTTP = ("falcon", "waitress", "requests", "urllib3", "httpx", "aiohttp", "http", "urllib.request",
        "socketserver", "wsgiref", "prometheus_client")
DEVICES = ("fcntl", "subprocess", "picamera2", "v4l2", "linuxpy")
PART_RULES = {
    # part: modules it must never reach (besides COMMAND_LAYER)
    "runtime": ("camfabric.protocol", "camfabric.capture_node", "camfabric.gateway", "camfabric.subscribers"),
    "protocol": ("camfabric.capture_node", "camfabric.gateway", "camfabric.subscribers", *HTTP, *DEVICES),
    "capture_node": ("camfabric.gateway", "camfabric.subscribers"),
    "gateway": ("camfabric.capture_node", "camfabric.subscribers"),
    "subscribers": ("camfabric.capture_node", "camfabric.gateway"),
}


@pytest.mark.parametrize("part", PART_RULES)
def test_each_part_reaches_only_what_the_architecture_allows(part):
    """runtime/ uses no part; protocol/ no camera and no HTTP; capture_node/ and gateway/ know
    neither each other nor the subscribers; subscribers/ reach cameras only through protocol/;
    and no part uses the command layer that is built on top of them."""
    forbidden = PART_RULES[part] + COMMAND_LAYER
    offenders = []
    for path in sorted((REPO / part).rglob("*.py")):
        offenders += [f"{path.relative_to(REPO)}: {name}"
                      for name in sorted(_named_modules(path)) if _within(name, forbidden)]
    assert offenders == []


def test_protocol_uses_opencv_only_as_a_jpeg_codec():
    """protocol/jpeg.py may encode and decode JPEG with OpenCV; opening a camera is the node's."""
    offenders = []
    for path in sorted((REPO / "protocol").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if CAMERA_NAMES.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


def test_no_production_package_names_the_simulation_not_even_as_a_string():
    """The demo and the tests register the tabletop scene (camfabric.sim.register()); the parts
    neither import it nor keep its name in a registry."""
    offenders = []
    for part in ("runtime", *PARTS):
        for path in sorted((REPO / part).rglob("*.py")):
            names = {n for n in _named_modules(path) if _within(n, ("camfabric.sim",))}
            names |= set(re.findall(r"camfabric\.sim\b[\w.]*", path.read_text()))
            offenders += [f"{path.relative_to(REPO)}: {name}" for name in sorted(names)]
    assert offenders == []


def test_benchmarks_import_nothing_from_the_tests():
    offenders = []
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        offenders += [f"{path.relative_to(REPO)}: {name}"
                      for name in sorted(_named_modules(path)) if _within(name, ("tests",))]
    assert offenders == []


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
    # PYTHONFAULTHANDLER: a demo that hangs is sent SIGABRT and says where each thread was.
    return subprocess.Popen([PYTHON, "-m", "camfabric.cli", "demo", *extra], cwd=REPO,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _communicate_or_show_where_it_hangs(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        _out, err = proc.communicate(timeout=10)
        raise AssertionError(f"still running {timeout} s after Ctrl-C:\n{err[-8000:]}") from None


def _camfabric_is_starting(pid: int, timeout: float = 30.0) -> None:
    """Wait until `pid` runs camfabric's own start: the demo's module has begun importing pyzmq
    (its library is mapped), inside `camfabric.cli.main`. A SIGINT before that lands in Python's
    own start-up — site's .pth files, the standard library — which prints a traceback of
    Python's code, not ours, and which a loaded machine stretches past half a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:  # not Linux, or the process is gone: press at once
            return
        if "zmq" in maps:
            return
        time.sleep(0.005)
    raise AssertionError(f"the demo did not start importing its parts within {timeout} s")


@pytest.mark.parametrize("after_s", [0.2, 0.6])
def test_ctrl_c_in_the_demos_first_second_exits_without_a_traceback(after_s):
    proc = _demo("--port", "0", "--node-port", "0", "--tracker-port", "0")
    _camfabric_is_starting(proc.pid)
    time.sleep(after_s)  # into the demo's own start: imports, ports, threads
    proc.send_signal(signal.SIGINT)
    _out, err = _communicate_or_show_where_it_hangs(proc, timeout=30)
    # 0: stopped cleanly; 130 or killed by SIGINT (-2 here, 130 in a shell's $?): interrupted.
    assert proc.returncode in (0, 130, -signal.SIGINT), err
    assert "Traceback" not in err


def test_demo_runs_beside_another_fabric_on_ports_of_its_choosing():
    # Something else already holds the default ports? Given port 0, the demo takes free ones
    # and says which.
    proc = _demo("--port", "0", "--node-port", "0", "--tracker-port", "0")
    output = Output(proc.stderr)
    try:
        url = Output(proc.stdout).wait_for(f"open ({URL})").group(1)
        said = output.wait_for(f"node publishing on ({ENDPOINT}), tracker on ({ENDPOINT}); "
                               f"gateway serving {re.escape(url)}")
        node, tracker = said.group(1), said.group(2)
        assert url != "http://127.0.0.1:8081/" and node != DEFAULT_ENDPOINT
        assert not tracker.endswith(":5560")
        answer = requests.get(f"{url}cameras", timeout=10)
        assert sorted(answer.json()) == ["0", "1", "2"]
        with Subscriber(node, cameras=[2]) as sub:
            assert sub.latest(2, timeout=10).cam == 2
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    err = output.text()
    assert proc.returncode == 0 and "Traceback" not in err
