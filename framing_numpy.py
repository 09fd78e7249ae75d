"""framing.py's framing, computed with numpy and scipy: what image_folders.py runs on the
thousands of files of a folder, about three times faster a core than framing.py's TensorFlow
graph, whose time goes on starting hundreds of small ops an image (bench/README.md).

The same framing to the bit, and tested so on images of every kind (tests/test_framing.py):
each step but the last computes with integers and booleans, or with the same float32
operations on the same values (the ink's 256 levels, counts of pixels), so that no order of
summing can change a result; the 8-connected blobs of the speck rule are scipy's
(`ndimage.label` finds the blobs that framing.py's labelling loop spreads through); and the
last step, the antialiased resize into the frame, whose sums of products could round
otherwise, is framing.py's own: its TensorFlow weights and matrix products (on the CPU).
predict.py, the page and the exports keep framing.py's graph, which a SavedModel and a LiteRT
file can carry; numpy cannot be exported. (The same for the settings the scripts accept:
min_stroke of at most 20, speck_share in [0, 1).)
"""
import functools

import numpy as np
from scipy import ndimage

from common import lazy_import, start_tensorflow
import framing

tf = lazy_import("tensorflow")  # loaded on first use, as framing.py's
F32 = np.float32
SIDE = framing.SIDE
AROUND = np.ones((3, 3), bool)  # 8-connected: the 3 x 3 square around a pixel


def ink_levels(image):
    """(table, levels): the ink of each of 256 levels as framing.ink_of computes it (float32,
    0..1), and the image's levels (H x W uint8): its alpha for a see-through image, otherwise
    its grey."""
    if image.shape[2] % 2 == 0:  # with 2 or 4 channels, the last is alpha
        alpha = image[..., -1]
        if alpha.min() < 128 and alpha.max() >= 128:  # some clear, some opaque
            return np.arange(256, dtype=F32) / F32(255), alpha
    if image.shape[2] >= 3:  # ITU-R 601-2 luma, in the integers Pillow uses for "L"
        red, green, blue = (image[..., i].astype(np.int32) for i in range(3))
        gray = ((red * 19595 + green * 38470 + blue * 7471 + 32768) >> 16).astype(np.uint8)
    else:
        gray = image[..., 0]
    counts = np.bincount(gray.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    low, high = int(present[0]), int(present[-1])
    below = np.cumsum(counts)
    total = int(below[-1])
    middle = F32(int(np.argmax(below > (total - 1) // 2)) + int(np.argmax(below > total // 2))) \
        / F32(2)  # the median: the mean of the two middle levels
    light = middle > F32(low + high) / F32(2)  # dark strokes on paper
    level = np.arange(256)
    levels = (255 - level if light else level).astype(F32)
    background = F32(255) - middle if light else middle
    brightest = F32(255 - low if light else high)
    table = np.clip((levels - background) / np.maximum(brightest - background, F32(1)),
                    F32(0), F32(1))
    return table, gray


def ink_mask(table, levels):
    """The pixels whose ink is over 0.5. The table rises or falls with the level, so they are
    one range of levels: two comparisons of the uint8 levels, no copy of 8 bytes a pixel."""
    over = np.flatnonzero(table > 0.5)
    if not len(over):
        return np.zeros(levels.shape, bool)
    return (levels >= over[0]) & (levels <= over[-1])


def shrunk(mask, side):
    """framing.shrunk: (the mask shrunk to at most `side` a side, any ink in a square making
    ink; the factor)."""
    height, width = mask.shape
    factor = (max(height, width) + side - 1) // side
    if factor == 1:
        return mask, 1
    padded = np.zeros((-(-height // factor) * factor, -(-width // factor) * factor), bool)
    padded[:height, :width] = mask
    return padded.reshape(len(padded) // factor, factor, -1, factor).any(axis=(1, 3)), factor


def without_specks(mask, speck_share):
    """framing.without_specks: the mask without its blobs (found on the ink shrunk to at most
    COMPONENT_SIDE a side) under `speck_share` of all the ink."""
    small, factor = shrunk(mask, framing.COMPONENT_SIDE)
    blobs, count = ndimage.label(small, AROUND)
    sizes = np.bincount(blobs.ravel(), minlength=count + 1)  # (0: the background)
    kept = sizes.astype(F32) / F32(max(int(sizes[1:].sum()), 1)) >= F32(speck_share)
    if kept[1:].all():
        return mask  # no specks: nothing to take out
    kept[0] = False
    small_kept = kept[blobs]
    rows, cols = np.arange(mask.shape[0]) // factor, np.arange(mask.shape[1]) // factor
    return mask & small_kept[rows][:, cols]


def stroke_width(mask):
    """framing.stroke_width: the ink's area over half its outline, from whole counts."""
    padded = np.pad(mask, 1)
    inner = mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    area = np.count_nonzero(mask)
    outline = area - np.count_nonzero(inner)
    return F32(2) * F32(area) / F32(outline) if outline else F32(0)


@functools.cache
def traced_resize_weights():
    """framing.resize_weights as one traced function of (source, target) sizes."""
    start_tensorflow()
    return tf.function(framing.resize_weights, input_signature=[
        tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)]).get_concrete_function()


@functools.lru_cache(maxsize=512)
def resize_weights(source, target):
    """The resize's weights for one axis (the same sizes recur over a folder; each at most
    55 x 448 floats)."""
    return traced_resize_weights()(tf.constant(source), tf.constant(target))


def fit_to_frame(mask):
    """framing.fit_to_frame of a mask with ink: cropped to it, scaled so that its longer side
    spans SIDE - 1 pixels (by framing.py's weights and TensorFlow's matrix products), centred,
    binarised -> SIDE x SIDE uint8."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(F32)
    shape = np.array(crop.shape, F32)
    size = np.maximum(np.round(shape * (F32(SIDE - 1) / shape.max())).astype(np.int32), 1)
    with tf.device("/CPU:0"):  # as framing.py's graph runs (a GPU's products may round otherwise)
        scaled = tf.matmul(tf.matmul(resize_weights(crop.shape[0], int(size[0])), crop),
                           resize_weights(crop.shape[1], int(size[1])), transpose_b=True).numpy()
    top, left = (SIDE - size) // 2
    framed = np.zeros((SIDE, SIDE), np.uint8)
    framed[top:top + size[0], left:left + size[1]] = scaled >= 0.5
    return framed


def frame(image, min_stroke=framing.MIN_STROKE, speck_share=framing.SPECK_SHARE):
    """framing.frame: a numpy image (H x W, or H x W x 1..4, uint8) -> 3136 binary pixels."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    table, levels = ink_levels(image)
    if levels.shape == (SIDE, SIDE) and len(np.unique(table[np.unique(levels)])) <= 2:
        ink = table[levels]  # two values at the training format's size: taken as it is
        bright = ink > (ink.min() + ink.max()) / F32(2)
        return (~bright if 2 * np.count_nonzero(bright) > bright.size else bright).astype(
            np.uint8).ravel()
    mask = without_specks(shrunk(ink_mask(table, levels), framing.MASK_SIDE)[0], speck_share)
    if not mask.any():
        return np.zeros(SIDE * SIDE, np.uint8)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    scale = F32(SIDE - 1) / F32(max(rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]))
    widen = np.ceil((F32(min_stroke or framing.MIN_STROKE) / scale - stroke_width(mask))
                    / F32(2))
    widen = int(min(widen, F32(max(mask.shape))))
    if widen >= 1:  # by a square of 2 * widen + 1 pixels, around the ink only
        top, left = max(rows[0] - widen, 0), max(cols[0] - widen, 0)
        mask = ndimage.maximum_filter(mask[top:rows[-1] + 1 + widen, left:cols[-1] + 1 + widen],
                                      size=2 * widen + 1, mode="constant", cval=0)
    return fit_to_frame(mask).ravel()
