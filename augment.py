"""Augmentation: random crop-zoom, scale and rotation, as the reference project did it.

    python augment.py      # writes augment_grid.png: originals beside augmented copies

The reference used crop 0-5 px per side, scale 0.8-1.2 per axis and rotation +-25 degrees
(`--crop_px=5 --scale=0.2 --rotate=25 --keep_aspect=False --backend=imgaug`). The defaults
below are milder and keep each character's aspect ratio: that measured better (README, levers).

Two implementations of the same random transform, both keeping shape, dtype and binary pixels:
- `augment_batch`: imgaug, as the reference project did it (numpy in, numpy out);
- `augment_batch_tf`: the same crop-zoom, scale and rotation as one affine warp per image in
  TensorFlow ops. train.py uses it by default: it runs inside the tf.data graph, in parallel and
  ahead of training, costing a few percent of an epoch instead of stalling it.
"""
import math

import numpy as np

from common import UserError, configure, lazy_import, pick, run, start_tensorflow

tf = lazy_import("tensorflow")  # loaded on first use: --help and mistakes answer at once

CROP_PX = 3            # crop 0 to this many pixels from each side, then resize back (a zoom)
SCALE = 0.1            # scale by a random factor in 1 +- this (both axes alike with --keep_aspect)
ROTATE = 12            # rotate by a random angle of up to this many degrees either way
KEEP_ASPECT = True     # True: one crop for all sides and one scale for both axes, so that the
                       # character's aspect ratio (0 against O, 1 against I) survives
ELASTIC = 0.0          # >0: also bend each image by a smooth random displacement field of up
                       # to about this many pixels, as pens wobble (--backend=tf only)
SHARE = 1.0            # share of the images that are transformed; the others pass unchanged
STROKE = 0.0           # share of the images whose strokes are then made a pixel thicker (half
                       # of them) or thinner (the other half) (--backend=tf only)
BACKEND = "tf"         # tf: an in-graph warp (fast, parallel); imgaug: the reference's library
IMGAUG_RANGES = ("crop_px", "scale", "rotate", "keep_aspect", "share")  # what imgaug does
_RANGES = {"CROP_PX": "[0, 20]", "SCALE": "[0, 1)", "ROTATE": "[0, 180]", "ELASTIC": "[0, 10]",
           "SHARE": "[0, 1]", "STROKE": "[0, 1]", "BACKEND": ("tf", "imgaug")}  # check_values


def imgaug_augmenters():
    """imgaug.augmenters, imported only when the imgaug back end is used. imgaug 0.4.0, its
    last release, still uses aliases that numpy 2 removed (`np.sctypes` at import time,
    `np.complex` in some parameters): restoring them is the whole fix, and this is its one
    place."""
    if not hasattr(np, "sctypes"):
        np.sctypes = {"int": [np.int8, np.int16, np.int32, np.int64],
                      "uint": [np.uint8, np.uint16, np.uint32, np.uint64],
                      "float": [np.float16, np.float32, np.float64],
                      "complex": [np.complex64, np.complex128],
                      "others": [bool, object, bytes, str, np.void]}
    if not hasattr(np, "complex"):
        np.complex = complex
    import imgaug.augmenters
    return imgaug.augmenters


def make_augmenter(seed, crop_px=CROP_PX, scale=SCALE, rotate=ROTATE, keep_aspect=KEEP_ASPECT,
                   share=SHARE):
    """The imgaug pipeline; the ranges default to the constants above."""
    iaa = imgaug_augmenters()
    scales = (1 - scale, 1 + scale)
    augmenter = iaa.Sometimes(share, iaa.Sequential([
        iaa.Crop(px=(0, crop_px), keep_size=True, sample_independently=not keep_aspect),
        iaa.Affine(scale=scales if keep_aspect else {"x": scales, "y": scales},
                   rotate=(-rotate, rotate), order=1),
    ]))
    augmenter.seed_(int(seed))  # seeds the children too (a seed= argument would not)
    return augmenter


def augment_batch(images, seed, **ranges):
    """Augments a batch of binary images (N x H x W, N x H x W x 1 or N x H*W; 0/1 values)
    with its own random draw for each image. Returns the same shape and dtype, still 0/1.
    `ranges` (crop_px, scale, rotate) override the constants, e.g. for the reference."""
    images = np.asarray(images)
    side = int(round(np.sqrt(images[0].size)))
    squares = (images.reshape(-1, side, side) * 255).astype(np.uint8)
    # Interpolate in 0..255, then threshold: smoother strokes than nearest-neighbour.
    augmented = make_augmenter(seed, **ranges)(images=squares)
    return (augmented >= 128).astype(images.dtype).reshape(images.shape)


def random_transforms(count, seed, side, crop_px, scale, rotate, keep_aspect=False):
    """`count` rows of 8 projective-transform parameters (output pixel -> input pixel), one
    random draw per image from a stateless seed (a [2] int tensor): crop 0..crop_px per side
    and resize back, then scale each axis by 1 +- scale and rotate by +-rotate degrees about
    the centre, as the imgaug pipeline does."""
    draws = tf.random.stateless_uniform([count, 7], seed=seed)
    if keep_aspect:  # one crop draw for every side, one scale draw for both axes
        draws = tf.gather(draws, [0, 0, 0, 0, 4, 4, 6], axis=1)
    crops = tf.floor(draws[:, :4] * (crop_px + 1))  # whole pixels, like imgaug
    left, right, top, bottom = tf.unstack(crops, axis=1)
    scale_x = 1 - scale + 2 * scale * draws[:, 4]
    scale_y = 1 - scale + 2 * scale * draws[:, 5]
    angle = (2 * draws[:, 6] - 1) * rotate * math.pi / 180
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Inverse of "scale, then rotate about the centre": output -> uncropped-and-resized image.
    a00, a01, a10, a11 = cos / scale_x, sin / scale_x, -sin / scale_y, cos / scale_y
    centre = (side - 1) / 2
    shift_x = centre - centre * (a00 + a01)
    shift_y = centre - centre * (a10 + a11)
    # Inverse of "crop, then resize back to side x side": into the original image.
    zoom_x, zoom_y = (side - left - right) / side, (side - top - bottom) / side
    zeros = tf.zeros_like(angle)
    return tf.stack([zoom_x * a00, zoom_x * a01, zoom_x * shift_x + left,
                     zoom_y * a10, zoom_y * a11, zoom_y * shift_y + top, zeros, zeros], axis=1)


def _warp(images, transforms):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")


def _bend(pixels, seed, strength):
    """Moves every pixel of each image by a smooth random displacement (a 4x4 grid of random
    shifts of up to `strength` pixels, interpolated over the image), sampled bilinearly."""
    shape = tf.shape(pixels)
    count, height, width = shape[0], shape[1], shape[2]
    coarse = tf.random.stateless_uniform([count, 4, 4, 2], seed=seed, minval=-1, maxval=1)
    shift = tf.image.resize(coarse, [height, width], method="bicubic") * strength
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32),
                             tf.range(width, dtype=tf.float32), indexing="ij")
    rows, cols = rows + shift[..., 0], cols + shift[..., 1]  # where each output pixel reads
    top, left = tf.floor(rows), tf.floor(cols)
    batch = tf.broadcast_to(tf.range(count)[:, None, None], tf.shape(rows))
    out = tf.zeros_like(rows)
    for d_row, d_col in ((0, 0), (0, 1), (1, 0), (1, 1)):  # the four neighbours, weighted
        r, c = top + d_row, left + d_col
        weight = (1 - tf.abs(rows - r)) * (1 - tf.abs(cols - c))
        inside = (r >= 0) & (r < tf.cast(height, tf.float32)) & (c >= 0) & \
            (c < tf.cast(width, tf.float32))
        index = tf.stack([batch, tf.cast(tf.clip_by_value(r, 0, tf.cast(height - 1, tf.float32)),
                                         tf.int32),
                          tf.cast(tf.clip_by_value(c, 0, tf.cast(width - 1, tf.float32)),
                                  tf.int32)], axis=-1)
        out += tf.where(inside, weight * tf.gather_nd(pixels[..., 0], index), 0.0)
    return out[..., None]


def _stroke_width(pixels, seed, share):
    """Makes the strokes of a random `share` of the images one pixel thicker (2x2 maximum)
    or thinner (2x2 minimum), half each: pens and scanners differ in line width."""
    thicker = tf.nn.max_pool2d(pixels, 2, 1, "SAME")
    thinner = -tf.nn.max_pool2d(-pixels, 2, 1, "SAME")
    draw = tf.random.stateless_uniform([tf.shape(pixels)[0], 1, 1, 1], seed=seed)
    return tf.where(draw < share / 2, thicker, tf.where(draw < share, thinner, pixels))


def augment_batch_tf(images, seed, crop_px=CROP_PX, scale=SCALE, rotate=ROTATE,
                     keep_aspect=KEEP_ASPECT, elastic=ELASTIC, share=SHARE, stroke=STROKE):
    """TensorFlow version of `augment_batch` for a batch of N x H x W x 1 binary images (any
    dtype); `seed` is a [2] int tensor. Bilinear warp, then threshold back to 0/1. The ranges
    default to the constants above."""
    pixels = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    transforms = random_transforms(shape[0], seed, tf.cast(shape[2], tf.float32), crop_px,
                                   scale, rotate, keep_aspect)
    warped = _warp(pixels, transforms)
    if elastic > 0:
        warped = _bend(warped, tf.random.experimental.stateless_fold_in(seed, 3), elastic)
    warped = tf.cast(warped >= 0.5, tf.float32)
    if stroke > 0:
        warped = _stroke_width(warped, tf.random.experimental.stateless_fold_in(seed, 1), stroke)
    if share < 1:
        chosen = tf.random.stateless_uniform([shape[0], 1, 1, 1], seed=tf.random.experimental
                                             .stateless_fold_in(seed, 2)) < share
        warped = tf.where(chosen, warped, pixels)
    return tf.cast(warped, images.dtype)


def augment_in_graph(images, seed, backend=BACKEND, **ranges):
    """For a tf.data pipeline: a batch N x H x W x 1 augmented by the chosen back end, with
    these ranges (imgaug's subset of them: see check_backend)."""
    if backend == "imgaug":  # the reference's library: Python, holds the GIL
        imgaug_ranges = {name: ranges[name] for name in IMGAUG_RANGES if name in ranges}
        augmented = tf.numpy_function(
            lambda batch, draw: augment_batch(batch, draw, **imgaug_ranges), [images, seed[1]],
            images.dtype, stateful=False)
        return tf.ensure_shape(augmented, images.shape)
    return augment_batch_tf(images, seed, **ranges)


def check_backend(backend, elastic, stroke):
    """What only the tf back end does, refused with imgaug (a UserError naming it)."""
    for name, value in (("elastic", elastic), ("stroke", stroke)):
        if backend == "imgaug" and value:
            raise UserError(f"--{name} needs --backend=tf (imgaug does not do it)")


def main(argv=None):
    from PIL import Image

    from prepare_data import prepare
    settings = configure(globals(), argv=argv)
    check_backend(settings.backend, settings.elastic, settings.stroke)
    ranges = pick(settings, globals())
    backend = ranges.pop("backend")
    output, rows, copies_per_row = "augment_grid.png", 8, 7  # originals, then copies of each
    x = prepare(verbose=False)["x_train"]  # the default data: data/train.pkl or embedded
    x = x[np.linspace(0, len(x) - 1, rows).astype(int)].reshape(-1, 56, 56, 1)
    start_tensorflow()
    copies = [augment_in_graph(tf.constant(x), tf.constant([0, c], tf.int64), backend,
                               **ranges).numpy() for c in range(copies_per_row)]
    columns = [x] + copies
    grid = np.full((rows * 58, len(columns) * 58), 128, np.uint8)  # grey gutters
    for c, batch in enumerate(columns):
        for r, image in enumerate(batch):
            grid[r * 58 + 1:r * 58 + 57, c * 58 + 1:c * 58 + 57] = image[..., 0] * 255
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2),
                                 Image.NEAREST).save(output)
    print(f"wrote {output}: originals in the first column, then "
          f"{copies_per_row} copies augmented with {backend}")


if __name__ == "__main__":
    run(main)
