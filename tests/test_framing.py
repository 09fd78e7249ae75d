"""framing.py's TensorFlow steps against what they replace or must agree with: scipy's
connected components for the speck rule, numpy's median, prepare_data's stroke width."""
import numpy as np
import pytest

import framing
import prepare_data
from conftest import png_header


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


# ---------------------------------------------------------------------------- big images

def ink_as_before(image):
    """framing.ink_of as it was before it saved memory on big images (an int32 copy of every
    channel): the reference that the leaner one must equal, value for value."""
    tf = framing.tf
    image = tf.cast(image, tf.int32)
    channels = tf.shape(image)[2]
    gray_channels = tf.cond(channels >= 3, lambda: image[..., :3],
                            lambda: tf.repeat(image[..., :1], 3, axis=2))
    gray = (gray_channels[..., 0] * 19595 + gray_channels[..., 1] * 38470
            + gray_channels[..., 2] * 7471 + 32768) // 65536
    alpha = tf.cond(channels % 2 == 0, lambda: image[..., -1],
                    lambda: tf.fill(tf.shape(gray), 255))
    see_through = tf.logical_and(tf.reduce_min(alpha) < 128, tf.reduce_max(alpha) >= 128)

    def from_gray():
        low, high = tf.reduce_min(gray), tf.reduce_max(gray)
        light = framing.median(gray) > tf.cast(low + high, tf.float32) / 2
        levels = tf.cast(tf.where(light, 255 - gray, gray), tf.float32)
        background = framing.median(tf.cast(levels, tf.int32))
        return tf.clip_by_value((levels - background)
                                / tf.maximum(tf.reduce_max(levels) - background, 1.0), 0.0, 1.0)

    return tf.cond(see_through, lambda: tf.cast(alpha, tf.float32) / 255, from_gray)


def frame_as_before(image, min_stroke, speck_share):
    """framing.frame_graph as it was before big images were shrunk: specks, widening and
    scaling on the whole image (framing.py's other steps, which did not change)."""
    tf = framing.tf
    ink = ink_as_before(image)
    if ink.shape == (56, 56) and len(np.unique(ink)) <= 2:
        bright = ink > (tf.reduce_min(ink) + tf.reduce_max(ink)) / 2
        return tf.cast(tf.logical_not(bright) if np.mean(bright) > 0.5 else bright, tf.uint8)
    mask = framing.without_specks(ink > 0.5, speck_share)
    if not np.any(mask):
        return np.zeros((56, 56), np.uint8)
    top, bottom, left, right = framing.bounds(mask)
    scale = 55 / tf.cast(tf.maximum(bottom - top, right - left), tf.float32)
    grow = tf.cast(tf.math.ceil((min_stroke / scale - framing.stroke_width(mask)) / 2), tf.int32)
    return framing.fit_to_frame(framing.grown(tf.cast(mask, tf.float32), grow))


def varied_images(count, seed=0):
    """Images up to MASK_SIDE a side of every kind framing.py meets: 1 to 4 channels, dark on
    light and light on dark, see-through, noisy, thick and thin strokes, specks, and 56x56
    images of two values."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        height, width = rng.integers(20, framing.MASK_SIDE + 1, 2)
        if i % 8 == 1:
            height = framing.MASK_SIDE  # the largest size left as it is
        rows, cols = np.mgrid[:height, :width]
        mask = np.zeros((height, width), bool)
        for _ in range(rng.integers(1, 4)):  # strokes: segments 0 to 8 pixels from a line
            (y0, y1), (x0, x1) = rng.integers(0, height, 2), rng.integers(0, width, 2)
            along = np.clip(((rows - y0) * (y1 - y0) + (cols - x0) * (x1 - x0))
                            / max((y1 - y0) ** 2 + (x1 - x0) ** 2, 1), 0, 1)
            mask |= np.hypot(rows - y0 - along * (y1 - y0),
                             cols - x0 - along * (x1 - x0)) <= rng.uniform(0, 8)
        mask |= rng.random((height, width)) < rng.choice([0, 0.0005, 0.003])  # specks
        if i % 8 == 0:
            mask = rng.random((56, 56)) < 0.2  # the training format itself
        ink, paper = rng.integers(0, 80), rng.integers(150, 256)
        if i % 2:
            ink, paper = paper, ink
        gray = np.clip(np.where(mask, ink, paper) + rng.normal(0, rng.choice([0, 5, 20]),
                                                             mask.shape), 0, 255).astype(np.uint8)
        channels = 1 + i % 4
        if channels == 1:
            yield gray[..., None]
        elif channels == 2:
            yield np.stack([gray, np.full_like(gray, 255)], axis=2)
        elif channels == 3:
            yield np.stack([gray, gray // 2 + 40, 255 - gray], axis=2)
        else:  # a canvas export: the strokes in the alpha, or an opaque colour image
            alpha = np.where(mask, 255, rng.integers(0, 40)).astype(np.uint8)
            yield np.dstack([gray, gray, gray, alpha if i % 3 else np.full_like(gray, 255)])


def test_images_within_mask_side_frame_exactly_as_before():
    for i, image in enumerate(varied_images(40)):
        for min_stroke, speck_share in ((3.0, 0.01), (7.5, 0.0), (1.0, 0.2)):
            np.testing.assert_array_equal(
                framing.frame(image, min_stroke, speck_share).reshape(56, 56),
                np.asarray(frame_as_before(image, min_stroke, speck_share)),
                err_msg=f"image {i}, {image.shape}, {min_stroke}, {speck_share}")
        np.testing.assert_array_equal(framing.ink_of(image).numpy(),
                                      ink_as_before(image).numpy(), err_msg=f"image {i}")


def test_the_numpy_framing_of_folders_is_framing_pys_to_the_bit():
    """framing_numpy.frame (image folders) against framing.frame (predict.py, the page, the
    exports) on images of every kind, within MASK_SIDE and over it (ink shrunk twice: for the
    frame and for the speck rule), blank and of one value, and in every setting's regime:
    widened or not, specks out or kept."""
    import framing_numpy
    rng = np.random.default_rng(9)
    images = list(varied_images(48, seed=3))
    for height, width in ((600, 900), (1400, 500), (449, 449)):  # over MASK_SIDE
        mask = np.zeros((height, width), bool)
        mask[height // 5:height - height // 5, width // 3:width // 3 + rng.integers(1, 40)] = True
        mask[height // 5:height // 5 + rng.integers(1, 40), width // 4:width - width // 4] = True
        mask |= rng.random((height, width)) < 0.0005  # specks of one pixel
        images.append(np.where(mask, 20, 230).astype(np.uint8))
    thin_lines = np.full((56, 300), 200, np.uint8)
    thin_lines[[0, 55]] = 0  # two lines of one pixel, at the edges
    images += [np.full((70, 90), 128, np.uint8), np.zeros((56, 56), np.uint8),  # one value
               np.eye(56, dtype=np.uint8) * 255, 255 - np.eye(56, dtype=np.uint8) * 255,
               thin_lines]  # (two values at 56x56: the minority is the ink)
    three_levels = np.full((56, 56), 250, np.uint8)
    three_levels[10:40, 20:26], three_levels[30:34, 5:50] = 0, 3  # two of them clip alike
    see_through = np.zeros((56, 56, 2), np.uint8)
    see_through[..., 1] = np.where(rng.random((56, 56)) < 0.7, 255, 0)  # most of it ink
    images += [three_levels, see_through, np.dstack([three_levels, np.full_like(three_levels,
                                                                                 255)])]
    for i, image in enumerate(images):
        for min_stroke, speck_share in ((3.0, 0.01), (9.0, 0.0), (1.0, 0.2), (0.0, 0.05)):
            np.testing.assert_array_equal(
                framing_numpy.frame(image, min_stroke, speck_share),
                framing.frame(image, min_stroke, speck_share),
                err_msg=f"image {i}, {image.shape}, {min_stroke}, {speck_share}")


def any_ink_shrunk(mask, side):
    """numpy's shrink of a mask to at most `side` a side: any ink in a square makes ink."""
    factor = -(-max(mask.shape) // side)
    padded = np.zeros((-(-mask.shape[0] // factor) * factor, -(-mask.shape[1] // factor) * factor),
                      bool)
    padded[:mask.shape[0], :mask.shape[1]] = mask
    return padded.reshape(len(padded) // factor, factor, -1, factor).any(axis=(1, 3))


def test_a_big_image_is_framed_from_its_ink_shrunk_to_mask_side():
    """A 40-megapixel page with a 1-pixel pen line (an upload at the page's limit) is framed
    as its ink shrunk to MASK_SIDE (any ink in a square makes ink): the line stays whole, and
    the costly steps work on 445 x 278 pixels, not 8000 x 5000."""
    from PIL import Image, ImageDraw
    page = Image.new("L", (8000, 5000), 255)
    ImageDraw.Draw(page).line([(1500, 700), (3000, 4300), (4000, 1500), (5000, 4300),
                               (6500, 700)], fill=0)  # a W, 1 pixel wide
    page.putpixel((7000, 4500), 0)  # and a speck
    pixels = np.asarray(page)
    small = any_ink_shrunk(pixels < 128, framing.MASK_SIDE)
    assert small.shape == (278, 445)
    framed = framing.frame(pixels).reshape(56, 56)
    np.testing.assert_array_equal(framed, framing.frame(np.where(small, 0, 255).astype(
        np.uint8)).reshape(56, 56))
    rows, cols = np.flatnonzero(framed.any(1)), np.flatnonzero(framed.any(0))
    assert cols[-1] - cols[0] + 1 == 55 and rows[-1] - rows[0] + 1 >= 30  # the whole W
    assert framed.sum(axis=1).max() >= 2 * framing.MIN_STROKE  # its strokes widened


def test_colour_images_are_framed_from_pillows_grey():
    """pixels_of gives Pillow's grey (and alpha) of a colour image, in a third of the memory:
    framed exactly as ink_of frames the colours themselves."""
    from PIL import Image
    rng = np.random.default_rng(4)
    rows, cols = np.mgrid[:90, :120]
    ring = np.abs(np.hypot(rows - 45, cols - 60) - 30) < 4
    colours = np.where(ring[..., None], (200, 40, 90), (240, 230, 160)).astype(np.uint8)
    colours = np.clip(colours + rng.normal(0, 12, colours.shape), 0, 255).astype(np.uint8)
    rgb = Image.fromarray(colours)
    see_through = Image.fromarray(np.dstack([colours, np.where(ring, 255, 30).astype(np.uint8)]))
    palette = rgb.quantize(8)
    clear = palette.copy()
    clear.info["transparency"] = int(np.asarray(palette)[0, 0])
    for image, as_colour in ((rgb, "RGB"), (see_through, "RGBA"), (rgb.convert("CMYK"), "RGB"),
                             (palette, "RGB"), (clear, "RGBA"), (rgb.convert("YCbCr"), "RGB")):
        pixels = framing.pixels_of(image)
        assert pixels.shape[2] == (2 if as_colour == "RGBA" else 1), image.mode
        np.testing.assert_array_equal(framing.frame(pixels),
                                      framing.frame(np.asarray(image.convert(as_colour))),
                                      err_msg=image.mode)


def test_only_the_named_formats_are_decoded(monkeypatch):
    """PNG, JPEG, BMP, GIF, TIFF and WebP are read; any other format Pillow knows is refused
    unopened (EPS would be handed to Ghostscript); a decompression bomb is told apart."""
    import io
    from PIL import EpsImagePlugin, Image
    from common import UserError
    for kind in ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"):
        buffer = io.BytesIO()
        Image.new("L", (40, 30), 200).save(buffer, kind)
        assert framing.decoded(buffer.getvalue(), kind).shape[:2] == (30, 40)
    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open",
                        lambda self: opened.append(self) or pytest.fail("EPS opened"))
    buffer = io.BytesIO()
    Image.new("L", (40, 30)).save(buffer, "EPS")
    for raw in (buffer.getvalue(), b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n"):
        with pytest.raises(UserError, match="x.eps is not a readable image .*PNG, JPEG"):
            framing.decoded(raw, "x.eps")
    assert opened == []
    with pytest.raises(UserError, match=r"^x.png has too many pixels: over the limit of "
                                        r"178,956,970; send a smaller image$"):
        framing.decoded(png_header(20000, 20000), "x.png")  # 400 megapixels in 57 bytes
    with pytest.raises(UserError, match="too many pixels: over the limit of 40,000,000"):
        framing.decoded(png_header(20000, 20000), "x.png", max_pixels=40_000_000)


def test_a_16_bit_grey_png_frames_like_its_8_bit_copy(tmp_path):
    from PIL import Image
    pen = np.full((120, 90), 255, np.uint8)  # dark strokes on paper
    pen[20:100, 40:48] = 0
    pen[20:28, 20:70] = 0
    Image.fromarray(pen.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16 bits a pixel
    Image.fromarray(pen).save(tmp_path / "flat.png")
    deep, flat = (framing.read_image_file((tmp_path / name).read_bytes(), name)
                  for name in ("deep.png", "flat.png"))
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # (what Pillow reads)
    assert deep.any()
    np.testing.assert_array_equal(deep, flat)
