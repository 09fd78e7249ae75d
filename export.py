"""Exports a trained checkpoint for use outside these scripts.

    python export.py                                   # out/best.keras -> export/
    python export.py --checkpoint=runs/a/best.keras --export_dir=my-model

Writes into --export_dir:
- saved_model/: a TensorFlow SavedModel; its `serve` function takes float32 images N x 56 x 56 x 1
  (0 = background, 1 = stroke) and returns N x 36 class probabilities;
- model.tflite: the same model for TensorFlow Lite (when the installed TensorFlow can convert);
- labels.txt: one line per class, `label character`, as evaluate.py names them.
Loading either needs TensorFlow (or a TFLite runtime) only, not this repository: see README.
"""
import os
import shutil

from common import UserError, atomic_path, configure, lazy_import, quiet_native_stderr, run, \
    write_text_atomic
import evaluate
import prepare_data

tf = lazy_import("tensorflow")  # loaded on first use: --help and mistakes answer at once

CHECKPOINT = "out/best.keras"  # a model written by train.py
EXPORT_DIR = "export"          # where the SavedModel, the TFLite file and labels.txt go
LABELS = "auto"                # class names: auto (by the checkpoint's data), none, or a PATH
TFLITE = True                  # True: also write model.tflite; False: the SavedModel only


def export_saved_model(model, path):
    """Writes the SavedModel under a temporary name, then swaps it in: an interrupted export
    never leaves a half-written model under the final name."""
    temporary = path + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    model.export(temporary, verbose=False)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(temporary, path)


def export_tflite(saved_model, path):
    """model.tflite from the SavedModel, or None with the reason if this TensorFlow cannot."""
    try:
        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()
    except Exception as error:  # a converter that is absent or fails: the SavedModel stands
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
    return None


def main(argv=None):
    settings = configure(globals(), positional="CHECKPOINT", argv=argv)
    export_dir = settings.export_dir
    model, record = evaluate.load_checkpoint(settings.checkpoint)
    evaluate.check_compatible(model, prepare_data.NUM_CLASSES)
    names = prepare_data.class_names(settings.labels, record["data"]["source"])
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise UserError(f"--export_dir={export_dir} is a file: choose a folder")
    os.makedirs(export_dir, exist_ok=True)
    saved_model = os.path.join(export_dir, "saved_model")
    with quiet_native_stderr():  # the exporter's and converter's C++ notices
        export_saved_model(model, saved_model)
        failure = export_tflite(saved_model, os.path.join(export_dir, "model.tflite")) \
            if settings.tflite else "not asked for (--tflite=False)"
    write_text_atomic(os.path.join(export_dir, "labels.txt"),
                      "".join(f"{name.replace(':', ' ', 1)}\n" if ":" in name else f"{name} {name}\n"
                              for name in names))
    print(f"wrote {saved_model}: serve(images N x 56 x 56 x 1, float32 0/1) -> N x "
          f"{prepare_data.NUM_CLASSES} probabilities")
    if failure:
        print(f"no model.tflite: {failure}")
    else:
        print(f"wrote {os.path.join(export_dir, 'model.tflite')}")
    print(f"wrote {os.path.join(export_dir, 'labels.txt')}: one 'label character' line per class")


if __name__ == "__main__":
    run(main)
