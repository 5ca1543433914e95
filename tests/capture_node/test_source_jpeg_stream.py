"""The JPEG splitter: whatever the chunking, garbage or truncation, only whole frames come out."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camfabric.capture_node.errors import SourceError
from camfabric.capture_node.sources.jpeg_stream import FrameSlot, JpegSplitter, check_jpeg
from camfabric.protocol.jpeg import decode_jpeg, encode_jpeg, is_complete_jpeg
from tests.fakes.rpicam_tcp import numbered_jpegs

JPEGS = numbered_jpegs(6, 96, 64) + numbered_jpegs(2, 320, 240, quality=30)

no_soi_garbage = st.binary(min_size=1, max_size=600).filter(lambda b: b"\xff\xd8" not in b)


@st.composite
def streams(draw):
    """A stream of whole JPEGs, garbage and cut-short JPEGs; returns (stream, expected)."""
    items = draw(st.lists(st.tuples(st.sampled_from(["whole", "garbage", "cut"]),
                                    st.integers(0, len(JPEGS) - 1), no_soi_garbage,
                                    st.floats(0.0, 1.0)), max_size=12))
    parts, expected = [], []
    for i, (kind, index, junk, where) in enumerate(items):
        jpeg = JPEGS[index]
        if kind == "whole":
            parts.append(jpeg)
            expected.append(jpeg)
        elif kind == "garbage":
            parts.append(junk)
        else:
            # A frame cut short is followed by another frame (or the end): the sender went on.
            nxt = items[i + 1][0] if i + 1 < len(items) else None
            if nxt == "garbage":
                continue
            parts.append(jpeg[: 2 + int(where * (len(jpeg) - 4))])
    return b"".join(parts), expected


@st.composite
def chunkings(draw, data: bytes):
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=40)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_split_of_any_stream_yields_exactly_the_whole_jpegs(data):
    stream, expected = data.draw(streams())
    splitter = JpegSplitter()
    frames = []
    for chunk in data.draw(chunkings(stream)):
        frames += splitter.feed(chunk)
    assert frames == expected


def test_every_frame_delivered_decodes_to_its_image():
    stream = b"\x00junk" + JPEGS[0][:500] + JPEGS[1] + b"\xff\xff\xffmore junk" + JPEGS[2]
    frames = JpegSplitter().feed(stream)
    assert frames == [JPEGS[1], JPEGS[2]]
    byte_by_byte = JpegSplitter()
    assert [f for i in range(len(stream)) for f in byte_by_byte.feed(stream[i : i + 1])] == frames
    for frame in frames:
        assert is_complete_jpeg(frame)
        assert decode_jpeg(frame).shape == (64, 96, 3)


def test_a_frame_cut_inside_its_headers_is_dropped_not_glued_to_the_next():
    jpeg = JPEGS[3]
    for cut in range(3, len(jpeg) - 2, 5):  # inside every header segment and the image data
        splitter = JpegSplitter()
        assert splitter.feed(jpeg[:cut] + JPEGS[4]) == [JPEGS[4]], cut
        assert splitter.dropped == 1


def test_an_exif_thumbnail_does_not_end_the_frame_early():
    thumb = encode_jpeg(decode_jpeg(JPEGS[0])[:16, :16])
    payload = b"Exif\x00\x00" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    jpeg = JPEGS[1][:2] + app1 + JPEGS[1][2:]
    assert JpegSplitter().feed(b"xx" + jpeg + JPEGS[2]) == [jpeg, JPEGS[2]]


def test_soi_and_eoi_without_image_data_are_not_a_frame():
    assert JpegSplitter().feed(b"\xff\xd8\xff\xd9" + JPEGS[0]) == [JPEGS[0]]


def test_a_frame_that_never_ends_is_dropped_at_the_size_limit():
    splitter = JpegSplitter(max_frame_bytes=5000)
    head = JPEGS[0][:-2]
    frames = splitter.feed(head + bytes(range(0, 255)) * 40)
    assert frames == []
    assert splitter.buffered <= 5000
    assert splitter.dropped == 1
    assert splitter.feed(JPEGS[1]) == [JPEGS[1]]


def test_rest_returns_what_follows_the_frame():
    splitter = JpegSplitter()
    splitter.push(JPEGS[0] + b"\r\n--frame\r\n")
    assert splitter.next_frame() == JPEGS[0]
    assert splitter.rest() == b"\r\n--frame\r\n"


def test_check_jpeg():
    assert all(check_jpeg(j) for j in JPEGS)
    assert not check_jpeg(JPEGS[0][:100] + JPEGS[1])
    assert not check_jpeg(JPEGS[0] + b"\x00")
    assert not check_jpeg(b"\xff\xd8\xff\xd9")


def test_frame_slot_hands_over_the_newest_frame_only():
    slot = FrameSlot()
    slot.put(b"old", 1)
    slot.put(b"new", 2)
    assert slot.take(0.1, "cam") == (b"new", 2)
    assert slot.replaced == 1
    with pytest.raises(SourceError, match="no frame within"):
        slot.take(0.05, "cam")


def test_frame_slot_reports_failure_after_the_last_whole_frame():
    slot = FrameSlot()
    slot.put(b"last", 1)
    slot.fail("connection closed")
    assert slot.take(0.1, "cam") == (b"last", 1)
    with pytest.raises(SourceError, match="connection closed"):
        slot.take(0.1, "cam")


def test_frame_slot_interrupt_wakes_a_blocked_take():
    slot = FrameSlot()
    threading.Timer(0.05, slot.interrupt).start()
    start = time.monotonic()
    with pytest.raises(SourceError, match="interrupted"):
        slot.take(5.0, "cam")
    assert time.monotonic() - start < 1.0
