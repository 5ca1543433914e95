#!/bin/sh
# Install camfabric as system services: a venv in /opt/camfabric/venv, the systemd units,
# a system user, and an example configuration in /etc/camfabric (never overwritten).
#
#   sudo deploy/install.sh                      # robot-cell example configuration
#   sudo deploy/install.sh printer-pi           # or another deploy/examples/<name>.toml
#
# Safe to run again (upgrades the package, keeps the configuration and secrets). The only
# network access is pip's (and apt's, on machines PyPI has no wheels for). Environment: PYTHON (default python3), PREFIX (/opt/camfabric),
# ROOT (install under another root, e.g. to stage an image; skips useradd and systemctl),
# CAMFABRIC_DEPS (auto: numpy/OpenCV/pyzmq from PyPI where it has wheels for this machine,
# else the distribution's; pypi; system). Supported systems: docs/install.md.
set -eu

EXAMPLE=${1:-robot-cell}
PYTHON=${PYTHON:-python3}
ROOT=${ROOT:-}
PREFIX=${PREFIX:-/opt/camfabric}
CONF_DIR="$ROOT/etc/camfabric"
UNIT_DIR="$ROOT/etc/systemd/system"
VENV="$ROOT$PREFIX/venv"
SRC=$(cd "$(dirname "$0")/.." && pwd)
EXAMPLE_FILE="$SRC/deploy/examples/$EXAMPLE.toml"

say() { printf 'camfabric install: %s\n' "$*"; }
die() { printf 'camfabric install: %s\n' "$*" >&2; exit 1; }

[ -f "$EXAMPLE_FILE" ] || die "no example '$EXAMPLE' (have: $(cd "$SRC/deploy/examples" && ls *.toml | sed 's/\.toml$//' | tr '\n' ' '))"
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or set ROOT to stage the files elsewhere"
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than Python 3.11 (Debian bookworm and Raspberry Pi OS bookworm have 3.11)"

# 1. A system user that may use cameras (video group) but owns nothing else.
if [ -z "$ROOT" ] && ! id camfabric >/dev/null 2>&1; then
    say "creating system user camfabric"
    useradd --system --home-dir /var/lib/camfabric --no-create-home --shell /usr/sbin/nologin camfabric
fi
if [ -z "$ROOT" ]; then
    for group in video render; do
        if getent group "$group" >/dev/null 2>&1; then
            usermod -a -G "$group" camfabric
        fi
    done
fi

# 2. The venv and the package (upgraded in place on a re-run), at requirements.lock's versions.
#    numpy, OpenCV and pyzmq come from PyPI where it has wheels for this machine (64-bit Pi OS,
#    x86-64); where it has none (32-bit Pi OS: armhf) they come from the distribution
#    (python3-numpy python3-opencv python3-zmq python3-msgpack) into a venv that sees them
#    (--system-site-packages). They are never built from source: a build of OpenCV or numpy
#    takes hours on a Pi, if it finishes. CAMFABRIC_DEPS=pypi|system forces a choice.
LOCK="$SRC/requirements.lock"
BINARY_ONLY="numpy opencv-python-headless pyzmq msgpack"   # never built from source here
DEBIAN_PACKAGES="python3-numpy python3-opencv python3-zmq python3-msgpack"
STARTED=$(date +%s)

locked() {  # the lock's pins of the given names
    for name in "$@"; do grep -i "^$name==" "$LOCK"; done
}

venv_mode() {  # how an existing venv was made: system or pypi
    if grep -qi '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" 2>/dev/null; then
        echo system
    else
        echo pypi
    fi
}

make_venv() {  # make_venv pypi|system
    if [ "$1" = system ]; then
        say "creating venv $VENV (it sees the distribution's packages)"
    else
        say "creating venv $VENV"
    fi
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if [ "$1" = system ]; then
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi || die "$PYTHON -m venv failed (on Debian and Raspberry Pi OS: apt-get install python3-venv)"
}

pypi_has_wheels() {  # are the locked numpy/OpenCV/pyzmq/msgpack on PyPI as wheels for this machine?
    # shellcheck disable=SC2046
    PROBE=$("$VENV/bin/python" -m pip install --quiet --dry-run --no-deps --only-binary=:all: \
        $(locked $BINARY_ONLY) 2>&1)
}

if [ "${CAMFABRIC_SKIP_PIP:-0}" = 1 ]; then
    [ -x "$VENV/bin/python" ] || make_venv pypi
else
    MODE=${CAMFABRIC_DEPS:-auto}
    case $MODE in auto|pypi|system) ;; *) die "CAMFABRIC_DEPS must be auto, pypi or system, not '$MODE'";; esac
    if [ "$MODE" = auto ] && [ -x "$VENV/bin/python" ]; then
        MODE=$(venv_mode)   # a re-run keeps what the first run chose
    fi
    if [ "$MODE" = auto ]; then
        make_venv pypi
        if pypi_has_wheels; then
            MODE=pypi
        else
            MODE=system
            say "PyPI has no wheels of $(locked $BINARY_ONLY | tr '\n' ' ')for $(uname -m) and Python $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
            say "  (pip: $(printf '%s\n' "$PROBE" | grep -m 1 'ERROR' || printf '%s\n' "$PROBE" | tail -n 1))"
        fi
    fi
    if [ "$MODE" = system ] && [ -n "$ROOT" ]; then
        die "the distribution's packages cannot be installed under ROOT; set CAMFABRIC_DEPS=pypi"
    fi
    if [ -x "$VENV/bin/python" ] && [ "$(venv_mode)" != "$MODE" ]; then
        make_venv "$MODE"
    elif [ ! -x "$VENV/bin/python" ]; then
        make_venv "$MODE"
    fi

    if [ "$MODE" = system ]; then
        command -v apt-get >/dev/null || die "no apt-get: install numpy, OpenCV and pyzmq for $PYTHON, then CAMFABRIC_DEPS=system"
        say "using the distribution's numpy, OpenCV, pyzmq and msgpack: apt-get install $DEBIAN_PACKAGES"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || say "apt-get update failed; trying the package lists there are"
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $DEBIAN_PACKAGES >/dev/null \
            || die "apt-get install $DEBIAN_PACKAGES failed"
        # The lock without the pins the distribution now provides; the rest is pure Python.
        CONSTRAINTS=$(mktemp)
        trap 'rm -f "$CONSTRAINTS"' EXIT
        grep -viE "^($(echo "$BINARY_ONLY" | tr ' ' '|'))==" "$LOCK" > "$CONSTRAINTS"
        EXTRAS=services
    else
        CONSTRAINTS=$LOCK
        EXTRAS=all
    fi
    say "installing camfabric[$EXTRAS] from $SRC (the versions of requirements.lock)"
    "$VENV/bin/python" -m pip install --quiet --upgrade --only-binary "$(echo "$BINARY_ONLY" | tr ' ' ',')" \
        -c "$CONSTRAINTS" "$SRC[$EXTRAS]" \
        || die "pip could not install camfabric (the distribution's numpy/OpenCV/pyzmq may be older than pyproject.toml's ranges)"
    # from / so that this tree's folders do not shadow what was installed
    (cd / && "$VENV/bin/python" - "$MODE" "$(( $(date +%s) - STARTED ))") <<'PY' || die "the installed camfabric does not import"
import sys, cv2, msgpack, numpy, zmq
import camfabric
mode, seconds = sys.argv[1], sys.argv[2]
origin = "the distribution's packages" if mode == "system" else "PyPI wheels"
def where(module):
    return "system" if "/dist-packages/" in module.__file__ else "venv"
print(f"camfabric install: camfabric {camfabric.__version__} on Python {sys.version.split()[0]}, "
      f"dependencies from {origin}: numpy {numpy.__version__} ({where(numpy)}), "
      f"OpenCV {cv2.__version__} ({where(cv2)}), pyzmq {zmq.__version__} ({where(zmq)}), "
      f"msgpack {'.'.join(map(str, msgpack.version))} ({where(msgpack)}); {seconds} s")
if zmq.pyzmq_version_info() < (25,):
    print(f"camfabric install: note: pyzmq {zmq.pyzmq_version()} cannot be a CURVE server (that needs "
          "25): a node here publishes on loopback or with insecure = true")
if not hasattr(getattr(cv2, "aruco", None), "ArucoDetector"):
    print(f"camfabric install: note: OpenCV {cv2.__version__} has no ArucoDetector: the tracker's "
          "aruco detector needs 4.7 (the gemini one works)")
PY
fi

# 3. Configuration: copied once, then it is the administrator's.
mkdir -p "$CONF_DIR"
chmod 0750 "$CONF_DIR"
if [ -e "$CONF_DIR/camfabric.toml" ]; then
    say "keeping existing $CONF_DIR/camfabric.toml"
else
    say "writing $CONF_DIR/camfabric.toml from examples/$EXAMPLE.toml"
    cp "$EXAMPLE_FILE" "$CONF_DIR/camfabric.toml"
    chmod 0640 "$CONF_DIR/camfabric.toml"
fi
if [ ! -e "$CONF_DIR/secrets.env" ]; then
    ( umask 077 && printf '# PRUSA_CONNECT_TOKEN=...\n# GEMINI_API_KEY=...\n' > "$CONF_DIR/secrets.env" )
fi
if [ -z "$ROOT" ]; then
    chown -R root:camfabric "$CONF_DIR"
    chown root:root "$CONF_DIR/secrets.env"   # read by systemd (as root), not by the services
fi

# 4. The units.
mkdir -p "$UNIT_DIR"
for unit in "$SRC"/deploy/systemd/*.service; do
    cp "$unit" "$UNIT_DIR/"
    chmod 0644 "$UNIT_DIR/$(basename "$unit")"
done
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

say "done. Edit $CONF_DIR/camfabric.toml, then for example:"
say "  systemctl enable --now camfabric-node camfabric-gateway"
say "  (camfabric-prusa-connect, camfabric-tracker and camfabric-timelapse when configured)"
if grep -q '^\[prusa_connect\]' "$CONF_DIR/camfabric.toml"; then
    say "Prusa Connect: put PRUSA_CONNECT_TOKEN=<20 letters and digits> in $CONF_DIR/secrets.env"
fi
say "Mainsail/Fluidd/MobileRaker: camfabric moonraker --help, and docs/klipper.md"
