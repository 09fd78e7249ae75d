"""framing.py's TensorFlow steps against what they replace or must agree with: scipy's
connected components for the speck rule, numpy's median, prepare_data's stroke width."""
import numpy as np
import pytest

import framing
import prepare_data


def blobby_masks(count, seed=0):
    """Random masks of a few blobs of random sizes (some specks), up to COMPONENT_SIDE pixels
    a side: where the speck rule works on the ink as it is, not shrunk."""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    for _ in range(count):
        height, width = rng.integers(20, framing.COMPONENT_SIDE + 1, 2)
        seeds = rng.random((height, width)) < rng.uniform(0.001, 0.02)
        yield ndimage.binary_dilation(seeds, iterations=int(rng.integers(0, 4))) | (
            rng.random((height, width)) < 0.002)


def specks_by_scipy(mask, share):
    from scipy import ndimage
    blobs, count = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(blobs.ravel())[1:]
    return np.isin(blobs, 1 + np.flatnonzero(sizes >= share * sizes.sum())) if count else mask


@pytest.mark.parametrize("share", [0.01, 0.05, 0.2])
def test_the_speck_rule_keeps_the_blobs_scipy_would(share):
    for mask in blobby_masks(12, seed=int(share * 100)):
        got = framing.without_specks(mask, share).numpy()
        np.testing.assert_array_equal(got, specks_by_scipy(mask, share))


def test_a_long_winding_blob_is_one_blob():
    mask = np.zeros((120, 120), bool)
    for row in range(4, 116, 8):  # a snake: rows joined at alternating ends
        mask[row, 4:116] = True
        mask[row:row + 8, 115 if (row // 8) % 2 == 0 else 4] = True
    mask[2, 2] = True  # a speck beside it
    got = framing.without_specks(mask, 0.01).numpy()
    assert got.sum() == mask.sum() - 1 and not got[2, 2]


def test_big_images_find_specks_on_shrunk_ink():
    mask = np.zeros((1000, 1000), bool)
    mask[100:900, 480:520] = True  # a bar
    mask[30:33, 30:33] = True  # a speck far from it
    mask[100:103, 475:478] = True  # and one 2 px from the bar: one blob when shrunk 8 times
    got = framing.without_specks(mask, 0.01).numpy()
    assert got[100:900, 480:520].all() and not got[30:33, 30:33].any()
    assert got[100:103, 475:478].all()


def test_stroke_width_is_the_recorded_measure():
    for mask in blobby_masks(10, seed=3):
        assert float(framing.stroke_width(mask)) == pytest.approx(
            prepare_data.stroke_width_of(mask), rel=1e-5)


def test_median_of_levels_is_numpys():
    rng = np.random.default_rng(1)
    for size in (1, 2, 7, 100, 1001):
        levels = rng.integers(0, 256, size)
        assert float(framing.median(levels.astype(np.int32))) == np.median(levels)


def test_the_ink_is_found_in_every_kind_of_image():
    strokes = np.zeros((30, 40), bool)
    strokes[5:25, 18:22] = True
    dark_on_light = np.where(strokes, 20, 230).astype(np.uint8)
    light_on_dark = 255 - dark_on_light
    see_through = np.zeros((30, 40, 4), np.uint8)
    see_through[..., :3] = 0  # black strokes whose alpha is the ink
    see_through[..., 3] = strokes * 255
    grey_alpha = np.stack([dark_on_light, np.full_like(dark_on_light, 255)], axis=2)
    colour = np.stack([dark_on_light, dark_on_light // 2, dark_on_light], axis=2)
    for image in (dark_on_light[..., None], light_on_dark[..., None], see_through, grey_alpha,
                  colour):
        ink = framing.ink_of(image).numpy()
        np.testing.assert_array_equal(ink > 0.5, strokes)
        assert ink.max() == 1.0 and ink.min() == 0.0


def test_framing_fills_the_frame_and_blank_stays_blank():
    image = np.zeros((300, 200), np.uint8)
    image[50:250, 90:110] = 255  # a tall bar
    framed = framing.frame(image).reshape(56, 56)
    rows, cols = np.flatnonzero(framed.any(1)), np.flatnonzero(framed.any(0))
    assert rows[-1] - rows[0] + 1 == 55  # the longer side spans 55 of 56 pixels
    assert abs((cols[0] + cols[-1]) / 2 - 27.5) <= 1  # centred
    assert not framing.frame(np.full((80, 80), 255, np.uint8)).any()  # white paper: no ink
    exact = (np.random.default_rng(0).random((56, 56)) < 0.2).astype(np.uint8)
    np.testing.assert_array_equal(framing.frame(exact * 255).reshape(56, 56), exact)
