"""prune.augment: random shifts against a per-image reference, seeding, config round trip."""
import numpy as np
import pytest

from prune.augment import Augment, random_shift


def _shift_reference(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move one image by (dy, dx) with zero fill, pixel by pixel."""
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    for i in range(h):
        for j in range(w):
            si, sj = i - dy, j - dx
            if 0 <= si < h and 0 <= sj < w:
                out[i, j] = img[si, sj]
    return out


@pytest.mark.parametrize("shape", [(40, 9, 7), (40, 9, 7, 2)])
def test_random_shift_matches_reference(shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    y = random_shift(x, 2, np.random.default_rng(5))
    # the same draws the function makes: dy then dx, one each per image
    r = np.random.default_rng(5)
    dy, dx = r.integers(-2, 3, size=len(x)), r.integers(-2, 3, size=len(x))
    assert len({(a, b) for a, b in zip(dy, dx)}) > 10  # many different shifts exercised
    for n in range(len(x)):
        ref = _shift_reference(x[n], int(dy[n]), int(dx[n]))
        bad = np.argwhere(y[n] != ref)
        assert bad.size == 0, f"image {n} shift ({dy[n]}, {dx[n]}): first wrong pixel {bad[0].tolist()}"


def test_random_shift_keeps_input_and_is_seeded():
    x = np.random.default_rng(2).random((16, 28, 28, 1)).astype(np.float32)
    before = x.copy()
    a = random_shift(x, 2, np.random.default_rng(9))
    b = random_shift(x, 2, np.random.default_rng(9))
    assert np.array_equal(x, before)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, x)
    assert np.array_equal(random_shift(x, 0, np.random.default_rng(0)), x)


def test_random_shift_bad_arguments():
    x = np.zeros((2, 5, 5), np.float32)
    with pytest.raises(ValueError, match="max_shift"):
        random_shift(x, -1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="smaller than the image"):
        random_shift(x, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        random_shift(np.zeros((5, 5), np.float32), 1, np.random.default_rng(0))


def test_augment_config():
    assert Augment.from_config({"shift": 2}).to_config() == {"shift": 2}
    assert not Augment.from_config(None)
    with pytest.raises(ValueError, match="unknown keys"):
        Augment.from_config({"shift": 2, "rotate": 5})
    with pytest.raises(ValueError, match="shift"):
        Augment(shift=True)
    with pytest.raises(ValueError, match="shift"):
        Augment(shift=9)
