"""The WebSocket frame-boundary tracker (runtime.ws_frames): frames of every length encoding, masked or not,
cut into chunks anywhere, headers split across chunks."""

from __future__ import annotations

import struct
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from pyngress.runtime.ws_frames import CLOSE, GOING_AWAY, FrameTracker, close_frame, close_status


def frame(opcode: int, length: int, *, masked: bool, fin: bool = True) -> bytes:
    head = bytes((0x80 * fin | opcode,))
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes((mask_bit | length,))
    elif length < 1 << 16:
        head += bytes((mask_bit | 126,)) + struct.pack("!H", length)
    else:
        head += bytes((mask_bit | 127,)) + struct.pack("!Q", length)
    if masked:
        head += b"\x01\x02\x03\x04"
    return head + bytes(range(256)) * (length // 256) + bytes(range(length % 256))


LENGTHS = st.one_of(st.integers(0, 130), st.sampled_from([125, 126, 127, 65535, 65536, 70000]))
FRAMES = st.lists(st.tuples(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]), LENGTHS, st.booleans()),
                  min_size=1, max_size=12)


def chunks(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    return [stream[a:b] for a, b in pairwise(points)]


@settings(max_examples=200, deadline=None)
@given(FRAMES, st.lists(st.integers(0, 1 << 20), max_size=30))
def test_every_frame_end_is_found_however_the_stream_is_cut(frames: list[tuple[int, int, bool]],
                                                             cuts: list[int]) -> None:
    encoded = [frame(op, n, masked=m) for op, n, m in frames]
    stream = b"".join(encoded)
    expected, at = [], 0
    for (op, _, _), f in zip(frames, encoded, strict=True):
        at += len(f)
        expected.append((at, op))
    tracker, found, base = FrameTracker(), [], 0
    for piece in chunks(stream, cuts):
        found += [(base + end, op) for end, op in tracker.ends(piece)]
        base += len(piece)
        assert tracker.at_boundary == (base in {end for end, _ in expected})
    assert found == expected


@settings(max_examples=200, deadline=None)
@given(FRAMES, st.lists(st.integers(0, 1 << 20), max_size=30))
def test_feed_keeps_the_same_position_as_ends(frames: list[tuple[int, int, bool]], cuts: list[int]) -> None:
    stream = b"".join(frame(op, n, masked=m) for op, n, m in frames)
    pieces = chunks(stream, cuts)
    fed, scanned = FrameTracker(), FrameTracker()
    for piece in pieces:
        fed.feed(piece)
        scanned.ends(piece)
        assert fed.at_boundary == scanned.at_boundary
    assert fed.at_boundary
    # and a frame after that is found from the fed tracker's position
    assert fed.ends(frame(CLOSE, 2, masked=True)) == [(8, CLOSE)]


def test_a_header_split_byte_by_byte() -> None:
    tracker = FrameTracker()
    data = frame(0x2, 70000, masked=True) + frame(0x1, 3, masked=True)
    ends = []
    for i in range(20):  # the 14-byte header of the first frame and some payload, one byte at a time
        ends += tracker.ends(data[i:i + 1])
        assert not tracker.at_boundary
    ends += [(20 + end, op) for end, op in tracker.ends(data[20:])]
    assert ends == [(14 + 70000, 0x2), (len(data), 0x1)]


def test_inside_a_long_payload_feed_only_counts() -> None:
    tracker = FrameTracker()
    tracker.feed(frame(0x2, 1 << 20, masked=False)[:10])  # the header (10 bytes: 64-bit length) alone
    for _ in range(16):
        tracker.feed(bytes(65536))
        assert tracker.at_boundary == (_ == 15)


def test_close_frames() -> None:
    to_client = close_frame(masked=False)
    assert to_client == b"\x88\x02\x03\xe9"  # FIN + close, unmasked, 1001
    to_pod = close_frame(masked=True)
    assert to_pod[0] == 0x88 and to_pod[1] == 0x82 and len(to_pod) == 8
    assert close_status(to_client) == close_status(to_pod) == GOING_AWAY
    assert FrameTracker().ends(to_pod) == [(8, CLOSE)]
    assert close_status(frame(0x1, 2, masked=False)) is None
