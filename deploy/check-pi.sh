#!/bin/sh
# The printer Pi's install, checked in emulated Raspberry Pi userlands (qemu-user; not a real
# Pi: no camera, no GPU, 10-20x slower): for each root, `deploy/install.sh printer-pi` from a
# clean copy of this tree, then a capture node with a synthetic camera and the gateway,
# /snapshot.jpg (200, a JPEG) and /status fetched, and the time taken and the numpy, OpenCV
# and pyzmq versions used written to docs/pi-check/ARCH-SUITE.md. Slow (minutes to an hour per
# root), so not part of CI. Needs root, network access for pip and apt, and the pi-userland
# tool (PI_USERLAND; by default shared/tools/pi-userland beside this clone, or on PATH).
#
#   sudo deploy/check-pi.sh                          # armhf bookworm, arm64 trixie
#   sudo deploy/check-pi.sh arm64:bookworm armhf:trixie
#
# Roots live in PI_ROOTS (default /var/tmp/camfabric-pi/ARCH-SUITE) and are made when missing
# (~5 min each) and kept for the next run; the tree is copied afresh each time, and each run
# starts from a root without /opt/camfabric.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PI_USERLAND:-}" ]; then
    for PI_USERLAND in "$SRC/../shared/tools/pi-userland" "$SRC/../../shared/tools/pi-userland" \
        "$(command -v pi-userland || true)"; do
        [ -x "$PI_USERLAND" ] && break
    done
fi
PI_ROOTS=${PI_ROOTS:-/var/tmp/camfabric-pi}
INSTALL_TIMEOUT=${INSTALL_TIMEOUT:-5400}   # seconds; an emulated OpenCV install is slow
START_TIMEOUT=${START_TIMEOUT:-600}        # seconds until the first snapshot
OUT="$SRC/docs/pi-check"

say() { printf 'check-pi: %s\n' "$*"; }
die() { printf 'check-pi: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot)"
[ -x "$PI_USERLAND" ] || die "no pi-userland at $PI_USERLAND (set PI_USERLAND)"
command -v unshare >/dev/null && command -v ip >/dev/null || die "needs unshare and ip (util-linux, iproute2)"
[ "$#" -gt 0 ] || set -- armhf:bookworm arm64:trixie
mkdir -p "$OUT"

# The services' configuration: one synthetic camera, the gateway on loopback.
CONFIG='[node]
name = "pi-check"
publish = "tcp://127.0.0.1:5550"
[[node.cameras]]
id = 0
name = "Synthetic"
resolution = [640, 480]
fps = 5
[node.cameras.source]
kind = "synthetic"

[gateway]
host = "127.0.0.1"
port = 8081
subscribe = ["tcp://127.0.0.1:5550"]
default_camera = 0
workers = 1
'

# Runs inside the root, in a network namespace of its own (only its loopback): starts the
# node and the gateway, waits for /snapshot.jpg, checks it and /status, prints KEY=VALUE lines.
SERVE='set -u
cd /tmp
V=/opt/camfabric/venv/bin
started=$(date +%s)
$V/camfabric node --config /tmp/pi-check.toml >/tmp/pi-check-node.log 2>&1 &
node=$!
$V/camfabric gateway --config /tmp/pi-check.toml >/tmp/pi-check-gateway.log 2>&1 &
gateway=$!
code=000
while [ $(( $(date +%s) - started )) -lt "$1" ]; do
    code=$(curl -s -o /tmp/snapshot.jpg -w "%{http_code}" http://127.0.0.1:8081/snapshot.jpg || true)
    [ "$code" = 200 ] && break
    sleep 2
done
echo "SNAPSHOT_STATUS=$code"
echo "SNAPSHOT_SECONDS=$(( $(date +%s) - started ))"
echo "SNAPSHOT_BYTES=$(wc -c < /tmp/snapshot.jpg 2>/dev/null || echo 0)"
echo "SNAPSHOT_MAGIC=$(head -c 2 /tmp/snapshot.jpg 2>/dev/null | od -An -tx1 | tr -d " ")"
echo "STATUS_STATUS=$(curl -s -o /tmp/status.json -w "%{http_code}" http://127.0.0.1:8081/status || true)"
echo "STATUS_JSON=$(head -c 600 /tmp/status.json 2>/dev/null | tr "\n" " ")"
$V/python - <<"PY"
import platform, sys
import cv2, msgpack, numpy, zmq
def where(m):
    return "Debian package" if "/dist-packages/" in m.__file__ else "PyPI wheel"
print("PYTHON=%s (%s)" % (sys.version.split()[0], platform.machine()))
print("NUMPY=%s (%s)" % (numpy.__version__, where(numpy)))
print("OPENCV=%s (%s)" % (cv2.__version__, where(cv2)))
print("PYZMQ=%s (%s)" % (zmq.__version__, where(zmq)))
print("MSGPACK=%s (%s)" % (".".join(map(str, msgpack.version)), where(msgpack)))
PY
kill -INT $node $gateway 2>/dev/null
wait $node $gateway 2>/dev/null
echo "--- node log (last lines)"; tail -n 5 /tmp/pi-check-node.log
echo "--- gateway log (last lines)"; tail -n 5 /tmp/pi-check-gateway.log
'

check_root() {
    arch=${1%%:*} suite=${1#*:}
    root="$PI_ROOTS/$arch-$suite"
    log="$PI_ROOTS/$arch-$suite.log"
    report="$OUT/$arch-$suite.md"
    if [ ! -x "$root/usr/bin/python3" ]; then
        say "$arch $suite: making the root $root (~5 min)"
        "$PI_USERLAND" make "$arch" "$suite" "$root" >"$log" 2>&1 || { tail -n 20 "$log"; die "pi-userland make failed"; }
    fi
    # A root used before keeps the distribution's packages and pip's cache from that run.
    if [ -e "$root/var/lib/camfabric-pi-check" ]; then
        fresh="no: used by an earlier run on $(cat "$root/var/lib/camfabric-pi-check"), whose apt packages and pip cache it keeps"
    else
        fresh="yes: no install ran in it before"
    fi
    date -u '+%Y-%m-%d %H:%M UTC' > "$root/var/lib/camfabric-pi-check"
    say "$arch $suite: a clean copy of the tree in $root/src, no /opt/camfabric, no /etc/camfabric"
    rm -rf "$root/src" "$root/opt/camfabric" "$root/etc/camfabric"
    "$PI_USERLAND" copy "$root" "$SRC" /src
    rm -rf "$root/src/docs/pi-check"
    printf '%s' "$CONFIG" > "$root/tmp/pi-check.toml"

    say "$arch $suite: deploy/install.sh printer-pi (up to $INSTALL_TIMEOUT s)"
    t0=$(date +%s)
    status=0
    timeout "$INSTALL_TIMEOUT" "$PI_USERLAND" run "$root" sh -c 'cd /src && ./deploy/install.sh printer-pi' \
        >"$log" 2>&1 || status=$?
    install_s=$(( $(date +%s) - t0 ))
    grep '^camfabric install:' "$log" || true
    if [ "$status" != 0 ]; then
        tail -n 30 "$log"
        result="FAILED: install.sh exited $status after $install_s s"
        serve=""
    else
        say "$arch $suite: node + gateway, waiting up to $START_TIMEOUT s for /snapshot.jpg"
        serve=$(unshare --net sh -c 'ip link set lo up && exec "$0" run "$1" sh -c "$2" serve "$3"' \
            "$PI_USERLAND" "$root" "$SERVE" "$START_TIMEOUT" 2>&1) || true
        printf '%s\n' "$serve"
        value() { printf '%s\n' "$serve" | sed -n "s/^$1=//p" | head -n 1; }
        if [ "$(value SNAPSHOT_STATUS)" = 200 ] && [ "$(value SNAPSHOT_MAGIC)" = ffd8 ] \
            && [ "$(value STATUS_STATUS)" = 200 ]; then
            result="PASSED"
        else
            result="FAILED: /snapshot.jpg $(value SNAPSHOT_STATUS) (starts $(value SNAPSHOT_MAGIC)), /status $(value STATUS_STATUS)"
        fi
    fi
    "$PI_USERLAND" umount "$root" || true
    {
        echo "# deploy/install.sh printer-pi on $suite $arch (emulated)"
        echo
        echo "Written by \`deploy/check-pi.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'). **Emulation, not a real"
        echo "Raspberry Pi**: a Debian $suite $arch root run through qemu-user on $(uname -m) ($(nproc) cores,"
        echo "shared), so times are 10-20x a Pi's; no camera (a synthetic one)."
        echo
        echo "- result: $result"
        echo "- install (from a clean tree, no venv): $install_s s; a fresh root: $fresh"
        echo '- what install.sh said:'
        echo
        echo '```'
        grep '^camfabric install:' "$log" || true
        echo '```'
        if [ -n "$serve" ]; then
            echo
            echo "- node + gateway, first /snapshot.jpg after $(value SNAPSHOT_SECONDS) s:" \
                "$(value SNAPSHOT_STATUS), $(value SNAPSHOT_BYTES) bytes starting $(value SNAPSHOT_MAGIC);" \
                "/status $(value STATUS_STATUS)"
            echo "- Python $(value PYTHON); numpy $(value NUMPY); OpenCV $(value OPENCV);" \
                "pyzmq $(value PYZMQ); msgpack $(value MSGPACK)"
            echo "- /status: \`$(value STATUS_JSON)\`"
        fi
    } > "$report"
    say "$arch $suite: $result (report: ${report#"$SRC"/})"
    case $result in PASSED) return 0;; *) return 1;; esac
}

failed=0
for spec in "$@"; do
    check_root "$spec" || failed=1
done
exit "$failed"
