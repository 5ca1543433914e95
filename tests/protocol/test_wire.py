"""Wire format v1: round trips, and every malformed message is a typed error."""

from __future__ import annotations

import json
import time

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from camfabric import protocol
from camfabric.protocol import topics, wire

JPEG = protocol.encode_jpeg(np.full((24, 32, 3), (40, 90, 200), np.uint8))


def jpeg_frame(**overrides) -> protocol.Frame:
    fields = dict(cam=3, seq=7, t_capture_ns=time.time_ns(), w=32, h=24, encoding="jpeg",
                  data=JPEG, node="n1", frame_id="overhead")
    fields.update(overrides)
    return protocol.Frame(**fields)


def header_of(parts) -> dict:
    return msgpack.unpackb(parts[1])


def test_jpeg_frame_round_trip_keeps_every_field():
    sent = jpeg_frame()
    parts = protocol.encode(sent, t_publish_ns=sent.t_capture_ns + 1_000)
    assert parts[0] == b"frame/3/jpeg"
    assert header_of(parts)["v"] == 1
    got = protocol.decode(parts, t_receive_ns=42)
    assert (got.cam, got.seq, got.t_capture_ns, got.w, got.h, got.node, got.frame_id) == (
        3, 7, sent.t_capture_ns, 32, 24, "n1", "overhead")
    assert got.t_publish_ns == sent.t_capture_ns + 1_000
    assert got.t_receive_ns == 42
    assert bytes(got.data) == JPEG
    assert got.image.shape == (24, 32, 3)


def test_raw_frame_round_trip_respects_step_padding():
    image = np.arange(24 * 32 * 3, dtype=np.uint32).astype(np.uint8).reshape(24, 32, 3)
    step = 32 * 3 + 8  # rows padded, as some cameras deliver them
    padded = np.zeros((24, step), np.uint8)
    padded[:, : 32 * 3] = image.reshape(24, -1)
    sent = jpeg_frame(encoding="bgr8", data=padded.tobytes(), step=step)
    got = protocol.decode(protocol.encode(sent))
    assert got.topic == b"frame/3/bgr8"
    assert np.array_equal(got.image, image)


def test_gray_frame_decodes_to_two_dimensions():
    gray = np.full((24, 32), 7, np.uint8)
    got = protocol.decode(protocol.encode(jpeg_frame(encoding="gray8", data=gray.tobytes(), step=32)))
    assert got.image.shape == (24, 32)


def test_age_adds_receiver_wait_to_publisher_wait_without_comparing_clocks():
    # The publisher's wall clock is a day ahead of the receiver's: it must not matter.
    day = 86_400 * 10**9
    frame = jpeg_frame(t_capture_ns=5 * day, t_publish_ns=5 * day + 3_000_000,
                       t_receive_ns=1_000_000_000)
    assert frame.age_ns(now_ns=1_000_000_000 + 7_000_000) == 10_000_000


@pytest.mark.parametrize("msg", [
    protocol.Meta(cam=2, node="n1", registry={"id": 2, "name": "Side"}, health={"connected": True}),
    protocol.Scan(node="n1", report={"cameras": []}),
    protocol.Status(service="prusa_connect", state={"cameras": {"0": {"uploads": 1}}}),
    protocol.World(model={"objects": []}, source="tracker"),
])
def test_non_frame_messages_round_trip(msg):
    parts = protocol.encode(msg)
    assert len(parts) == 2
    got = protocol.decode(parts)
    assert type(got) is type(msg)
    assert got.topic == msg.topic


def test_topics_close_camera_part_so_prefixes_do_not_collide():
    assert not topics.frame(10, "jpeg").startswith(topics.frame_prefix(1))
    assert not topics.meta(10).startswith(topics.meta(1))


def test_unknown_header_keys_are_ignored():
    parts = protocol.encode(jpeg_frame())
    header = header_of(parts)
    header["future_key"] = {"nested": [1, 2]}
    got = protocol.decode([parts[0], msgpack.packb(header), parts[2]])
    assert got.seq == 7


@pytest.mark.parametrize("version", [None, 0, 2, "1", True])
def test_wrong_or_missing_version_is_rejected(version):
    parts = protocol.encode(jpeg_frame())
    header = header_of(parts)
    if version is None:
        del header["v"]
    else:
        header["v"] = version
    with pytest.raises(protocol.VersionError):
        protocol.decode([parts[0], msgpack.packb(header), parts[2]])


@pytest.mark.parametrize("change, error", [
    ({"w": 16385}, protocol.LimitError),
    ({"h": 0}, protocol.LimitError),
    ({"seq": -1}, protocol.ProtocolError),
    ({"cam": "zero"}, protocol.ProtocolError),
    ({"seq": True}, protocol.ProtocolError),
    ({"encoding": "png"}, protocol.ProtocolError),
    ({"cam": 4}, protocol.ProtocolError),  # header says camera 4, topic says 3
])
def test_bad_header_values_are_rejected(change, error):
    parts = protocol.encode(jpeg_frame())
    header = header_of(parts) | change
    with pytest.raises(error):
        protocol.decode([parts[0], msgpack.packb(header), parts[2]])


def test_truncated_jpeg_is_rejected():
    parts = protocol.encode(jpeg_frame())
    with pytest.raises(protocol.ProtocolError, match="FFD9"):
        protocol.decode([parts[0], parts[1], JPEG[:-10]])


def test_raw_length_must_equal_h_times_step():
    parts = protocol.encode(jpeg_frame(encoding="bgr8", data=bytes(24 * 96), step=96))
    with pytest.raises(protocol.LimitError, match="h\\*step"):
        protocol.decode([parts[0], parts[1], bytes(24 * 96 - 1)])


def test_payload_over_64_mib_is_rejected_before_use():
    big = b"\xff\xd8" + bytes(wire.MAX_PAYLOAD) + b"\xff\xd9"
    parts = protocol.encode(jpeg_frame())
    with pytest.raises(protocol.LimitError, match="exceeds"):
        protocol.decode([parts[0], parts[1], big])


def test_sender_cannot_encode_a_frame_that_breaks_the_limits():
    with pytest.raises(protocol.LimitError):
        protocol.encode(jpeg_frame(encoding="bgr8", data=bytes(10), step=96))


parts_strategy = st.lists(st.binary(max_size=64), min_size=0, max_size=5)


@settings(max_examples=300, deadline=None)
@given(parts_strategy)
def test_arbitrary_bytes_never_escape_as_anything_but_protocol_error(parts):
    try:
        protocol.decode(parts)
    except protocol.ProtocolError:
        pass


header_values = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.text(max_size=8),
                          st.binary(max_size=8), st.lists(st.integers(-100, 100), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["cam", "seq", "t_capture_ns", "t_publish_ns", "node", "w", "h", "encoding",
                        "step", "v", "frame_id"]), header_values,
       st.sampled_from(["jpeg", "bgr8"]))
def test_any_single_corrupted_header_field_is_rejected_or_still_valid(key, value, encoding):
    data = JPEG if encoding == "jpeg" else bytes(24 * 96)
    parts = protocol.encode(jpeg_frame(encoding=encoding, data=data, step=96 if encoding == "bgr8" else 0))
    header = header_of(parts)
    header[key] = value
    try:
        got = protocol.decode([parts[0], msgpack.packb(header), parts[2]])
    except protocol.ProtocolError:
        return
    # Accepted: then it is a coherent frame whose payload matches its header.
    assert isinstance(got, protocol.Frame)
    wire.check_frame(got)
    assert got.topic == parts[0]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 2**40), st.integers(1, 64), st.integers(1, 64))
def test_any_valid_raw_frame_round_trips(cam, seq, w, h):
    data = bytes(range(256)) * ((w * 3 * h) // 256 + 1)
    sent = protocol.Frame(cam=cam, seq=seq, t_capture_ns=seq, w=w, h=h, encoding="bgr8",
                          data=data[: w * 3 * h], step=w * 3, node="n")
    got = protocol.decode(protocol.encode(sent))
    assert (got.cam, got.seq, got.w, got.h, bytes(got.data)) == (cam, seq, w, h, bytes(sent.data))


def test_public_names_are_exactly_the_documented_surface():
    assert set(protocol.__all__) == {name for name in dir(protocol) if not name.startswith("_")} - {
        "delay", "demand", "endpoint", "errors", "jpeg", "link", "mailbox", "outlet", "publisher",
        "reachability", "security", "subscriber", "sync", "wire", "world"}


# -- hostile input: deep nesting, huge declared sizes, bombs --------------------------------

def nested(depth: int, leaf=0):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def frame_parts_with(**header_changes) -> list:
    parts = protocol.encode(jpeg_frame())
    return [parts[0], msgpack.packb(header_of(parts) | header_changes), parts[2]]


@pytest.mark.parametrize("where", ["frame_id", "future_key"])
def test_a_header_nested_1000_deep_is_a_protocol_error_not_a_recursion_error(where):
    # ~1 KB on the wire; before the bound, str() of it raised RecursionError in the receiver.
    # Nested by hand (0x91: an array of one), since msgpack before 1.1 packs at most 511 levels.
    parts = frame_parts_with(**{where: "NESTED-HERE"})
    parts[1] = parts[1].replace(msgpack.packb("NESTED-HERE"), b"\x91" * 1000 + msgpack.packb("x"))
    assert len(parts[1]) < 2048
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.decode(parts)
    assert wire.failure_kind(caught.value) in ("header.depth", "header.msgpack")


def test_a_registry_nested_deep_in_a_heartbeat_is_refused():
    meta = protocol.Meta(cam=1, node="n", registry={"name": "x"}, health={})
    parts = protocol.encode(meta)
    header = header_of(parts)
    header["registry"]["mount"] = {"a": nested(wire.MAX_DEPTH)}
    with pytest.raises(protocol.LimitError, match="nests deeper"):
        protocol.decode([parts[0], msgpack.packb(header)])


@pytest.mark.parametrize("declared", [
    b"\xdd\xff\xff\xff\xff",        # array 32: 4 G items
    b"\xdf\xff\xff\xff\xff",        # map 32: 4 G pairs
    b"\xdb\xff\xff\xff\xff",        # str 32: 4 GB
    b"\xc6\xff\xff\xff\xff",        # bin 32: 4 GB
    b"\xc9\xff\xff\xff\xff\x01",    # ext 32: 4 GB
])
def test_huge_declared_sizes_in_a_header_are_refused_without_allocating(declared):
    head = msgpack.packb({"v": 1, "t_publish_ns": 1})
    # A map of 3 items whose last value declares gigabytes it does not carry.
    raw = b"\x83" + head[1:] + b"\xa1x" + declared
    with pytest.raises(protocol.ProtocolError):
        protocol.decode([b"meta/0/", raw])


@pytest.mark.parametrize("value, kind", [
    (b"\x00binary", "header.value"),
    (msgpack.ExtType(5, b"x"), "header.msgpack"),
    ({1: "int key"}, "header.key"),
])
def test_values_json_cannot_carry_are_refused_in_any_header(value, kind):
    meta = protocol.encode(protocol.Meta(cam=1, node="n", registry={}, health={}))
    header = header_of(meta)
    header["registry"]["name"] = value
    raw = msgpack.packb(header, use_bin_type=True, strict_types=False)
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.decode([meta[0], raw])
    assert wire.failure_kind(caught.value) == kind


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=6)
    | st.binary(max_size=6),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=4) | st.integers(0, 9), children, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["frame_id", "node", "future", "registry", "health", "model", "state"]),
       json_like, st.integers(0, 40))
def test_any_nested_value_anywhere_is_decoded_or_refused_as_protocol_error(key, value, depth):
    meta = {"v": 1, "t_publish_ns": 1, "cam": 1, "node": "n",
            "registry": {key: nested(depth, value)}, "health": {}}
    for parts in (frame_parts_with(**{key: nested(depth, value)}),
                  [b"meta/1/", msgpack.packb(meta, use_bin_type=True)]):
        try:
            got = protocol.decode(parts)
        except protocol.ProtocolError as exc:
            assert wire.failure_kind(exc)  # a fixed kind to count it under
            continue
        # Accepted: whatever it carries can be shown as JSON.
        json.dumps(got.registry if isinstance(got, protocol.Meta) else got.frame_id)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_arbitrary_msgpack_headers_only_ever_raise_protocol_error(raw):
    try:
        protocol.decode([b"meta/0/", raw])
    except protocol.ProtocolError:
        pass


def jpeg_declaring(width: int, height: int, base: bytes = JPEG) -> bytes:
    """`base` with its SOF's dimensions rewritten: a few hundred bytes that claim w x h."""
    data = bytearray(base)
    i = 2
    while not (data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2)):
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    data[i + 5 : i + 9] = bytes([height >> 8, height & 255, width >> 8, width & 255])
    return bytes(data)


def test_a_jpeg_whose_sof_disagrees_with_its_header_is_refused_at_decode():
    parts = protocol.encode(jpeg_frame())
    bomb = jpeg_declaring(16384, 16384)
    with pytest.raises(protocol.LimitError, match="SOF"):
        protocol.decode([parts[0], parts[1], bomb])


def test_a_jpeg_honestly_declaring_too_many_pixels_is_refused_at_decode():
    parts = protocol.encode(jpeg_frame())
    header = header_of(parts) | {"w": 16384, "h": 16384}
    with pytest.raises(protocol.LimitError, match="cap"):
        protocol.decode([parts[0], msgpack.packb(header), jpeg_declaring(16384, 16384)])


BOMB_SCRIPT = """
import resource, sys
import numpy as np
from camfabric.protocol import jpeg, LimitError
bomb = sys.stdin.buffer.read()
# Leave 300 MB of address space: a decoder that allocated 16384x16384x3 (805 MB) would fail
# with an allocation error, not the LimitError asked for.
with open("/proc/self/status") as fh:
    vm = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 300 * 2**20, resource.RLIM_INFINITY))
try:
    jpeg.decode_jpeg(bomb)
except LimitError as exc:
    print("refused:", exc)
"""


def test_a_jpeg_bomb_is_refused_before_anything_decodes_it():
    import subprocess
    import sys
    bomb = jpeg_declaring(16384, 16384)
    assert len(bomb) < 2000
    done = subprocess.run([sys.executable, "-c", BOMB_SCRIPT], input=bomb, capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"refused: JPEG declares 16384x16384" in done.stdout


def test_jpeg_size_walks_segments_instead_of_scanning_a_large_payload():
    import time as _time
    junk = b"\xff\xd8" + b"\x00" * (8 * 2**20) + b"\xff\xd9"  # no marker where one must be
    start = _time.monotonic()
    with pytest.raises(protocol.ProtocolError, match="no JPEG marker"):
        protocol.decode([b"frame/3/jpeg", protocol.encode(jpeg_frame())[1], junk])
    assert _time.monotonic() - start < 5  # a byte-by-byte Python scan of 8 MB takes far longer


@pytest.mark.parametrize("where, key, value", [
    ("registry", "resolution", 5),
    ("registry", "resolution", [640, "480"]),
    ("registry", "resolution", [640, 480, 3]),
    ("registry", "name", 7),
    ("registry", "id", True),
    ("health", "fps", "fast"),
    ("health", "connected", 1),
    ("health", "errors", 2.5),
])
def test_heartbeat_fields_of_the_wrong_type_are_refused_at_decode(where, key, value):
    fields = {"registry": {"id": 1, "resolution": [640, 480]}, "health": {"fps": 10.0}}
    fields[where][key] = value
    parts = protocol.encode(protocol.Meta(cam=1, node="n", **fields))
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.decode(parts)
    assert wire.failure_kind(caught.value) == f"{where}.{key}"


def test_a_heartbeat_with_unknown_fields_and_nulls_is_accepted():
    meta = protocol.Meta(cam=1, node="n", registry={"id": 1, "fov_deg": None, "lens": {"f": 4}},
                         health={"connected": False, "fps": 0, "future": [1, "x"]})
    assert protocol.decode(protocol.encode(meta)).registry["lens"] == {"f": 4}
