"""Class names: one per label of a dataset, from an image folder's subfolders, from the
PATH-labels.txt beside a pickle, or from the label files in data/ (the users' 36 classes, the
embedded digits). Shown as "label:name", since two of the users' labels both read as N.
"""
import os

from common import UserError
import data_format

LABELS_SUFFIX = "-labels.txt"  # PATH-labels.txt beside PATH.pkl names its classes

_HERE = os.path.dirname(os.path.abspath(__file__))
_LABEL_FILES = {data_format.EMBEDDED: os.path.join(_HERE, "data", "labels-digits.txt"),
                "default": os.path.join(_HERE, "data", "labels-36.txt")}


def num_classes_of(data):
    """How many classes (outputs) a dataset has, by its manifest or run record's data: a
    folder's subfolders, the embedded digits' 10, the users' pickle's 36 (also for records
    written before the number was kept)."""
    return data.get("num_classes", data_format.NUM_CLASSES)


def names_of_classes(data):
    """The class names of a dataset (manifest or run record's data), one per label: a
    folder's subfolder names, else the digits for the embedded default, else the reading of
    the users' 36 classes in data/labels-36.txt ("" where a label has no name)."""
    if data.get("class_names"):
        return list(data["class_names"])
    file = _LABEL_FILES[data_format.EMBEDDED if data.get("source") == data_format.EMBEDDED
                        else "default"]
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


def labels_file_of(data_path):
    """Where the class names of a pickle (or .npz) are kept: PATH-labels.txt beside PATH.pkl."""
    return os.path.splitext(data_path)[0] + LABELS_SUFFIX


def names_beside(path):
    """The class names, one per label, in the PATH-labels.txt beside a pickle (what
    --output writes with it), or None where there is none."""
    if not os.path.isfile(path):
        return None
    mapping = read_label_file(path)
    if not mapping or min(mapping) < 0:
        raise UserError(f"{path} names no labels 0 and up: give one 'label name' line per "
                        f"class, like '0 A', or remove the file")
    return [mapping.get(label, str(label)) for label in range(max(mapping) + 1)]
