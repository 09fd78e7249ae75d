"""The one framing of images into the training format, in TensorFlow: what predict.py does to
your files, the page to its drawings and uploads, prepare_data.py to an image folder, and the
exported SavedModel's `classify_image` to the images it is sent.

An image (H x W x 1, 2, 3 or 4 channels of uint8, any size) becomes 56x56 binary pixels, white
strokes on black, framed as the users' images are (the ops are all LiteRT builtins, so that
predict.py can run the same framing without TensorFlow: tflite_model, lite_framer):
1. the ink: the alpha channel of a see-through image (a canvas export), otherwise the grey
   levels, turned over when most pixels are light (dark strokes on paper), from the background
   (the median) to the brightest stroke;
2. the ink of an image over MASK_SIDE pixels a side is shrunk to MASK_SIDE (any ink in a
   square makes ink), so that the steps below cost the same for any size; then specks out:
   blobs of ink (8-connected) under SPECK_SHARE of all the ink are dropped, found on the ink
   shrunk to at most COMPONENT_SIDE pixels a side (a big photo's blobs, a few pixels apart,
   count as one);
3. strokes that would come out thinner than `min_stroke` pixels at 56x56 are widened (a big
   photo's thin pen lines would vanish);
4. the character is cropped to its ink, scaled (keeping its aspect) so that its longer side
   spans 55 pixels, centred and binarised.
A 56x56 image of two values is taken as it is (the minority colour is the ink). EXIF
orientation is the caller's: `read_image_file` turns a photo upright before framing it.
"""
import contextlib
import functools
import io

import numpy as np

from common import UserError, lazy_import, quiet_native_stderr, start_tensorflow
import data_format

tf = lazy_import("tensorflow")  # loaded on first use: --help and mistakes answer at once

# The defaults of predict.py and serve.py (their settings) and of prepare_data.py's folders.
MIN_STROKE = 3.0          # strokes thinner than this many pixels at 56x56 are widened
SPECK_SHARE = 0.01        # ink blobs under this share of all the ink are specks, left out
COMPONENT_SIDE = 128      # specks are found on the ink shrunk to at most this many pixels a side
MASK_SIDE = 448           # a bigger image's ink is shrunk to at most this many pixels a side
                          # before specks, widening and scaling, which cost work per pixel:
                          # 8 times the frame's side, detail to spare for 56 pixels
SIDE = data_format.SIDE   # the training format: SIDE x SIDE binary images
# The image files read (Pillow's names): those the README names, no others. Pillow knows more,
# some by way of other programs (it hands EPS to Ghostscript), which no upload should reach.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WebP")


# ---------------------------------------------------------------------------- the steps

def ink_of(image):
    """uint8 H x W x C (C = 1, 2, 3 or 4) -> H x W float32 ink 0..1, strokes bright. (On a big
    image every whole-image copy counts: no int32 copy of all the channels, one histogram for
    both medians.)"""
    channels = tf.shape(image)[2]

    def some_clear_some_opaque():  # with 2 or 4 channels, the last is alpha
        alpha = tf.cast(image[..., -1], tf.int32)  # (LiteRT compares no uint8)
        return tf.logical_and(tf.reduce_min(alpha) < 128, tf.reduce_max(alpha) >= 128)

    def luma():  # the luma of ITU-R 601-2, in the integers Pillow uses for its "L" images
        red, green, blue = (tf.cast(image[..., i], tf.int32) for i in range(3))
        return (red * 19595 + green * 38470 + blue * 7471 + 32768) // 65536

    def from_gray():  # (with one or two channels, the first is the grey: the luma of itself)
        gray = tf.cond(channels >= 3, luma, lambda: tf.cast(image[..., 0], tf.int32))
        low, high = tf.reduce_min(gray), tf.reduce_max(gray)
        middle = median(gray)
        light = middle > tf.cast(low + high, tf.float32) / 2  # dark strokes on paper
        levels = tf.cond(light, lambda: tf.cast(255 - gray, tf.float32),
                         lambda: tf.cast(gray, tf.float32))
        background = tf.where(light, 255 - middle, middle)  # the median of the levels
        brightest = tf.cast(tf.where(light, 255 - low, high), tf.float32)
        return tf.clip_by_value((levels - background)
                                / tf.maximum(brightest - background, 1.0), 0.0, 1.0)

    see_through = tf.cond(channels % 2 == 0, some_clear_some_opaque, lambda: tf.constant(False))
    return tf.cond(see_through, lambda: tf.cast(image[..., -1], tf.float32) / 255, from_gray)


def median(levels):
    """The median of integer levels 0..255 (as numpy's: the mean of the two middle ones)."""
    flat = tf.reshape(levels, [-1])
    counts = tf.cumsum(tf.math.unsorted_segment_sum(tf.ones_like(flat), flat, 256))
    total = counts[-1]
    lower = tf.argmax(counts > (total - 1) // 2, output_type=tf.int32)
    upper = tf.argmax(counts > total // 2, output_type=tf.int32)
    return tf.cast(lower + upper, tf.float32) / 2


def largest_around(x):
    """Each pixel of H x W floats the largest value of the 3 x 3 square around it (outside
    the image does not count)."""
    shape = tf.shape(x)
    pooled = tf.nn.max_pool2d(tf.reshape(x, [1, shape[0], shape[1], 1]), 3, 1, "SAME")
    return tf.reshape(pooled, shape)


def grown(mask, radius):
    """A 0/1 float mask dilated by a square of 2 * radius + 1 pixels: `radius` 3 x 3 steps
    (outside the image counts as background)."""
    grown, _ = tf.while_loop(lambda x, i: i < radius, lambda x, i: (largest_around(x), i + 1),
                             [mask, tf.constant(0)])
    return grown


def shrunk(mask, side):
    """(a bool mask shrunk to at most `side` pixels a side, the factor): each factor x factor
    square (the last ones padded) becomes one pixel, ink if any of it is ink, so that a thin
    line stays whole (an average would fade it). A mask within `side` comes back as it is."""
    height, width = tf.shape(mask)[0], tf.shape(mask)[1]
    factor = (tf.maximum(height, width) + side - 1) // side
    rows, cols = (height + factor - 1) // factor, (width + factor - 1) // factor
    # (padded by concatenation, across then down: LiteRT pads no bool or uint8, and an int32
    # copy of a big mask would take 4 bytes a pixel)
    wide = tf.concat([mask, tf.zeros([height, cols * factor - width], tf.bool)], axis=1)
    across = tf.reduce_any(tf.reshape(wide, [height, cols, factor]), axis=2)
    tall = tf.concat([across, tf.zeros([rows * factor - height, cols], tf.bool)], axis=0)
    return tf.reduce_any(tf.reshape(tall, [rows, factor, cols]), axis=1), factor


def without_specks(mask, speck_share):
    """The mask (H x W bool) without its blobs under `speck_share` of all the ink. Blobs are
    the 8-connected components of the ink shrunk to at most COMPONENT_SIDE a side, labelled by
    spreading the largest pixel index through each blob."""
    height, width = tf.shape(mask)[0], tf.shape(mask)[1]
    small, factor = shrunk(mask, COMPONENT_SIDE)
    count = tf.size(small)
    start = tf.where(small, tf.reshape(tf.range(1, count + 1), tf.shape(small)), 0)

    def spread_once(labels, _):
        # each ink pixel takes the largest label around it, then the label of the pixel that
        # its label names (which lies in the same blob): that jump makes it settle in about
        # log2(blob length) rounds instead of one round per pixel of length
        around = tf.cast(largest_around(tf.cast(labels, tf.float32)), tf.int32)
        spread = tf.where(small, around, 0)
        jumped = tf.gather(tf.reshape(spread, [-1]), tf.maximum(spread - 1, 0))
        spread = tf.where(small, tf.maximum(spread, jumped), 0)
        return spread, tf.reduce_any(spread != labels)

    labels, _ = tf.while_loop(lambda labels, changed: changed, spread_once,
                              [start, tf.constant(True)])
    sizes = tf.math.unsorted_segment_sum(tf.ones_like(labels), labels, count + 1)
    ink = tf.cast(tf.maximum(tf.reduce_sum(sizes[1:]), 1), tf.float32)
    share = tf.cast(sizes, tf.float32) / ink
    kept = tf.logical_and(small, tf.gather(share >= speck_share, labels))
    full = tf.repeat(tf.repeat(kept, factor, axis=0), factor, axis=1)[:height, :width]
    return tf.logical_and(mask, full)


def bounds(mask):
    """(top, bottom, left, right) of the ink in a mask with ink, bottom and right exclusive."""
    rows = tf.where(tf.reduce_any(mask, axis=1))[:, 0]
    cols = tf.where(tf.reduce_any(mask, axis=0))[:, 0]
    return (tf.cast(rows[0], tf.int32), tf.cast(rows[-1], tf.int32) + 1,
            tf.cast(cols[0], tf.int32), tf.cast(cols[-1], tf.int32) + 1)


def stroke_width(mask):
    """The stroke width in pixels of an ink mask: its area over half its outline (the ink
    with background above, below, left or right of it; outside the image is background).
    The same measure as prepare_data.stroke_width_of, which train.py records."""
    ink = tf.cast(mask, tf.float32)
    padded = tf.pad(ink, [[1, 1], [1, 1]])
    inner = ink * padded[:-2, 1:-1] * padded[2:, 1:-1] * padded[1:-1, :-2] * padded[1:-1, 2:]
    return tf.math.divide_no_nan(2 * tf.reduce_sum(ink), tf.reduce_sum(ink - inner))


def fit_to_frame(ink):
    """Ink (H x W float, bright strokes; not empty) cropped to where it passes half its
    maximum, scaled (keeping the aspect) so that its longer side spans SIDE - 1 pixels,
    centred and binarised -> SIDE x SIDE uint8 0/1."""
    top, bottom, left, right = bounds(ink > 0.5 * tf.reduce_max(ink))
    crop = ink[top:bottom, left:right] / tf.reduce_max(ink)
    shape = tf.cast(tf.shape(crop), tf.float32)
    scale = (SIDE - 1) / tf.reduce_max(shape)
    size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
    scaled = tf.matmul(tf.matmul(resize_weights(tf.shape(crop)[0], size[0]), crop),
                       resize_weights(tf.shape(crop)[1], size[1]), transpose_b=True)
    offset = (SIDE - size) // 2
    margins = [[offset[0], SIDE - size[0] - offset[0]], [offset[1], SIDE - size[1] - offset[1]]]
    framed = tf.pad(tf.cast(scaled >= 0.5, tf.int32), margins)
    return tf.cast(tf.reshape(framed, [SIDE, SIDE]), tf.uint8)


def resize_weights(source, target):
    """target x source weights of an antialiased bilinear resize of one axis: each output
    pixel the triangle-weighted mean of the source pixels under it, the triangle as wide as
    an output pixel when shrinking (as tf.image.resize(..., antialias=True) computes it)."""
    scale = tf.cast(target, tf.float32) / tf.cast(source, tf.float32)
    centres = (tf.range(tf.cast(target, tf.float32)) + 0.5) / scale
    sources = tf.range(tf.cast(source, tf.float32)) + 0.5
    distance = tf.abs(tf.reshape(sources, [1, -1]) - tf.reshape(centres, [-1, 1]))
    weights = tf.maximum(1 - distance / tf.maximum(1 / scale, 1.0), 0.0)
    return weights / tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1e-12)


def frame_graph(image, min_stroke, speck_share):
    """The whole framing, as graph ops: uint8 H x W x C -> SIDE x SIDE uint8 0/1 (all 0 for
    an image with no ink)."""
    ink = ink_of(image)

    def as_it_is():  # a two-valued 56x56 image: the training format already
        bright = ink > (tf.reduce_min(ink) + tf.reduce_max(ink)) / 2
        bright = tf.cond(tf.reduce_mean(tf.cast(bright, tf.float32)) > 0.5,
                         lambda: tf.logical_not(bright), lambda: bright)
        return tf.cast(bright, tf.uint8)

    def framed():
        mask = without_specks(shrunk(ink > 0.5, MASK_SIDE)[0], speck_share)

        def fit():
            top, bottom, left, right = bounds(mask)
            scale = (SIDE - 1) / tf.cast(tf.maximum(bottom - top, right - left), tf.float32)
            grow = tf.cast(tf.math.ceil((min_stroke / scale - stroke_width(mask)) / 2), tf.int32)
            # (grow < 1: as it is; more than the mask's side fills it as that side does)
            grow = tf.minimum(grow, tf.reduce_max(tf.shape(mask)))
            return fit_to_frame(grown(tf.cast(mask, tf.float32), grow))

        return tf.cond(tf.reduce_any(mask), fit, lambda: tf.zeros([SIDE, SIDE], tf.uint8))

    two_valued = tf.cond(  # (the values are counted only at the training format's size)
        tf.reduce_all(tf.shape(ink) == SIDE),
        lambda: tf.size(tf.unique(tf.reshape(ink, [-1]))[0]) <= 2, lambda: tf.constant(False))
    return tf.reshape(tf.cond(two_valued, as_it_is, framed), [SIDE, SIDE])


@functools.cache
def traced():
    """frame_graph as one tf.function for images of any size, traced once (quietly: starting
    TensorFlow's runtime prints C++ notices that are not the user's business)."""
    start_tensorflow()
    return tf.function(frame_graph, input_signature=[
        tf.TensorSpec([None, None, None], tf.uint8), tf.TensorSpec([], tf.float32),
        tf.TensorSpec([], tf.float32)])


def frame(image, min_stroke=MIN_STROKE, speck_share=SPECK_SHARE):
    """A numpy image (H x W, or H x W x 1..4, uint8) -> 3136 binary pixels (uint8 0/1)."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    return traced()(image, float(min_stroke or MIN_STROKE), float(speck_share)).numpy().ravel()


def tflite_model():
    """frame_graph as a LiteRT (TensorFlow Lite) model of builtin ops only: the same function,
    which predict.py runs (lite_framer) to frame files without starting TensorFlow."""
    function = traced()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with quiet_native_stderr():
        return converter.convert()


def lite_framer(path):
    """frame(), computed by LiteRT's interpreter from the file of tflite_model()'s bytes at
    `path`: a function of frame()'s arguments."""
    from ai_edge_litert.interpreter import Interpreter
    with quiet_native_stderr():  # (LiteRT's C++ notice of its CPU delegate)
        interpreter = Interpreter(model_path=path)
    inputs = {detail["name"]: detail["index"] for detail in interpreter.get_input_details()}
    output = interpreter.get_output_details()[0]["index"]

    def frame_by_lite(image, min_stroke=MIN_STROKE, speck_share=SPECK_SHARE):
        image = np.asarray(image, np.uint8)
        if image.ndim == 2:
            image = image[:, :, None]
        interpreter.resize_tensor_input(inputs["image"], image.shape)
        with quiet_native_stderr():
            interpreter.allocate_tensors()
        interpreter.set_tensor(inputs["image"], image)
        interpreter.set_tensor(inputs["min_stroke"], np.float32(min_stroke or MIN_STROKE))
        interpreter.set_tensor(inputs["speck_share"], np.float32(speck_share))
        interpreter.invoke()
        return interpreter.get_tensor(output).ravel()
    return frame_by_lite


# ---------------------------------------------------------------------------- image files

def pixels_of(image):
    """A PIL image -> uint8 H x W x C, turned upright by its EXIF orientation: LA (grey and
    alpha) for an image with transparency, otherwise L (grey). Colours become the grey that
    ink_of would compute from them (Pillow's L is the same luma), in a third of the memory or
    half."""
    from PIL import ExifTags, ImageOps
    # (no copies of an image already upright and in its mode: a big one is hundreds of MB)
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):  # 16 or 32 bits of grey: Pillow's "L" would clip at 255
        wide = np.asarray(image).astype(np.int64)
        top = 65535 if wide.max() > 255 else 255
        return (np.clip(wide, 0, top) * 255 // top).astype(np.uint8)[:, :, None]
    see_through = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info)
    if image.mode not in ("1", "L", "LA"):  # colours, or a palette of them
        colour = "RGBA" if see_through else "RGB"
        image = image if image.mode == colour else image.convert(colour)
    mode = "LA" if see_through else "L"
    pixels = np.asarray(image if image.mode == mode else image.convert(mode), np.uint8)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


@contextlib.contextmanager
def read_errors(where, max_pixels=None):
    """Pillow's errors in reading the image file `where` -> one-line UserErrors naming it: a
    decompression bomb (too many pixels), or not a readable image."""
    from PIL import Image, UnidentifiedImageError
    try:
        yield
    except Image.DecompressionBombError:  # over twice Pillow's MAX_IMAGE_PIXELS
        limit = min(max_pixels or 2 * Image.MAX_IMAGE_PIXELS, 2 * Image.MAX_IMAGE_PIXELS)
        raise UserError(f"{where} has too many pixels: over the limit of {limit:,}; send a "
                        f"smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise UserError(f"{where} is not a readable image ({type(error).__name__}): use a "
                        f"{', '.join(IMAGE_FORMATS[:-1])} or {IMAGE_FORMATS[-1]} file") from None


def opened(raw, where, max_pixels=None):
    """The bytes of an image file -> an open PIL image of one of IMAGE_FORMATS, its header
    read and nothing decoded yet, or a UserError naming `where`: not a readable image, or more
    pixels (width x height) than `max_pixels`."""
    from PIL import Image
    with read_errors(where, max_pixels):
        image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
    width, height = image.size
    if max_pixels and width * height > max_pixels:
        image.close()
        raise UserError(f"{where} has too many pixels ({width} x {height}): over the limit of "
                        f"{max_pixels:,}; send a smaller image")
    return image


def decoded(raw, where, max_pixels=None):
    """The bytes of an image file -> pixels_of(it), or a UserError naming `where` if they are
    not a readable image of IMAGE_FORMATS (or one of more than `max_pixels`, not decoded)."""
    with opened(raw, where, max_pixels) as image, read_errors(where, max_pixels):
        return pixels_of(image)


def read_image_file(raw, where, min_stroke=MIN_STROKE, speck_share=SPECK_SHARE,
                    max_pixels=None, framer=frame):
    """The bytes of an image file -> 3136 binary pixels, framed (by `framer`: frame, or a
    lite_framer)."""
    return framer(decoded(raw, where, max_pixels), min_stroke, speck_share)
