#!/bin/sh
# Install camfabric as system services: a venv in /opt/camfabric/venv, the systemd units,
# a system user, and an example configuration in /etc/camfabric (never overwritten).
#
#   sudo deploy/install.sh                      # robot-cell example configuration
#   sudo deploy/install.sh printer-pi           # or another deploy/examples/<name>.toml
#
# Safe to run again (upgrades the package, keeps the configuration and secrets). The only
# network access is pip's. Environment: PYTHON (default python3), PREFIX (/opt/camfabric),
# ROOT (install under another root, e.g. to stage an image; skips useradd and systemctl).
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
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than Python 3.11"

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

# 2. The venv and the package (upgraded in place on a re-run).
if [ ! -x "$VENV/bin/python" ]; then
    say "creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
if [ "${CAMFABRIC_SKIP_PIP:-0}" != 1 ]; then
    say "installing camfabric from $SRC"
    "$VENV/bin/python" -m pip install --quiet --upgrade -c "$SRC/requirements.lock" "$SRC[all]"
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
