"""Augmentation of the reference project: random crop, scale and rotation, with imgaug.

    python augment.py      # writes augment_grid.png: originals beside augmented copies

`augment_batch` keeps shape, dtype and binary pixels; train.py runs it inside tf.data workers
so that it overlaps with training.
"""
import numpy as np

# imgaug 0.4.0, its last release, still uses aliases that numpy 2 removed: `np.sctypes` at import
# time and `np.complex` in some parameters. Restoring them is the whole fix; nothing else changes.
if not hasattr(np, "sctypes"):
    np.sctypes = {"int": [np.int8, np.int16, np.int32, np.int64],
                  "uint": [np.uint8, np.uint16, np.uint32, np.uint64],
                  "float": [np.float16, np.float32, np.float64],
                  "complex": [np.complex64, np.complex128],
                  "others": [bool, object, bytes, str, np.void]}
if not hasattr(np, "complex"):
    np.complex = complex
import imgaug.augmenters as iaa  # noqa: E402  (needs the aliases above)

from common import configure, run  # noqa: E402

CROP_PX = 5            # crop 0..CROP_PX pixels from each side, then resize back (a zoom)
SCALE = 0.2            # scale x and y independently by 1 +- SCALE
ROTATE = 25            # rotation range in degrees, +-ROTATE
SEED = 0               # for the preview grid
OUTPUT = "augment_grid.png"  # where `python augment.py` writes its preview
ROWS = 8               # preview: images shown, each followed by COPIES augmented copies
COPIES = 7


def make_augmenter(seed, crop_px=None, scale=None, rotate=None):
    """The imgaug pipeline; ranges default to the constants above (read at call time)."""
    crop_px = CROP_PX if crop_px is None else crop_px
    scale = SCALE if scale is None else scale
    rotate = ROTATE if rotate is None else rotate
    augmenter = iaa.Sequential([
        iaa.Crop(px=(0, crop_px), keep_size=True),
        iaa.Affine(scale={"x": (1 - scale, 1 + scale), "y": (1 - scale, 1 + scale)},
                   rotate=(-rotate, rotate), order=1),
    ])
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


def main():
    from PIL import Image

    from prepare_data import prepare
    configure(globals())
    x = prepare(verbose=False)["x_train"]
    x = x[np.linspace(0, len(x) - 1, ROWS).astype(int)].reshape(-1, 56, 56)  # varied classes
    columns = [x] + [augment_batch(x, SEED + copy) for copy in range(COPIES)]
    grid = np.ones((ROWS * 58, len(columns) * 58), np.uint8) * 128  # grey 2-px gutters
    for c, batch in enumerate(columns):
        for r, image in enumerate(batch):
            grid[r * 58 + 1:r * 58 + 57, c * 58 + 1:c * 58 + 57] = image * 255
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2),
                                 Image.NEAREST).save(OUTPUT)
    print(f"wrote {OUTPUT}: first column originals, then {COPIES} augmented copies each")


if __name__ == "__main__":
    run(main)
