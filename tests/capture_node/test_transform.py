"""Rotation and flip, pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest

from camfabric.capture_node.transform import Transform

PICTURE = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # 3 wide, 2 high


def test_identity_hands_back_the_same_array():
    assert Transform().identity and Transform().apply(PICTURE) is PICTURE


def test_rotation_is_clockwise():
    out = Transform(90).apply(PICTURE)
    assert out.shape == (3, 2, 3)
    assert np.array_equal(out[0, 0], PICTURE[1, 0])  # bottom-left comes to the top-left
    assert np.array_equal(out[0, 1], PICTURE[0, 0])
    assert Transform(90).size(3, 2) == (2, 3) and Transform(180).size(3, 2) == (3, 2)


@pytest.mark.parametrize("rotation, flip, expect", [
    (0, "horizontal", PICTURE[:, ::-1]),
    (0, "vertical", PICTURE[::-1]),
    (0, "both", PICTURE[::-1, ::-1]),
    (180, "none", PICTURE[::-1, ::-1]),
    (270, "none", np.rot90(PICTURE)),
    (90, "vertical", np.rot90(PICTURE, -1)[::-1]),
])
def test_every_combination(rotation, flip, expect):
    out = Transform(rotation, flip).apply(PICTURE)
    assert np.array_equal(out, expect) and out.flags.c_contiguous


def test_gray_pictures_turn_too():
    gray = PICTURE[..., 0]
    assert np.array_equal(Transform(90, "horizontal").apply(gray), np.rot90(gray, -1)[:, ::-1])


def test_bad_values_are_refused():
    with pytest.raises(ValueError):
        Transform(45)
    with pytest.raises(ValueError):
        Transform(0, "sideways")
