"""How fast training and inference are on a CPU, against the plain reference way.

    python bench/speed.py        # the real data if present, else 18,082 generated images

For the default model and train.py's tf.data pipeline it measures seconds per training epoch
with augmentation off and on, inference images/s over a test split and peak memory; then the
same model trained the plain way (model.fit on numpy arrays, imgaug on each batch in a Python
loop, as the reference project did), at our batch size and at the reference's batch of 32.
Also: the compute floor from this machine's measured peak FLOP/s, the epoch time with no input
pipeline at all, the cost of DETERMINISTIC=True, and how long commands take from the shell
(--help, a mistake, predict.py on one image file, with TensorFlow, on its first run and from
the LiteRT copies that run writes: each the fastest of --command_repeats runs),
and how many image files a second framing.py frames one by one (as predict.py does), and a
folder of --folder_images PNGs is framed by its first preparation (image_folders.py: numpy's
framing_numpy.py, a process per core).
All ratios come from one run on one machine.
"""
import dataclasses
import io
import math
import os
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import configure, lazy_import, pick, run, start_tensorflow  # noqa: E402
import data_format  # noqa: E402
import inference  # noqa: E402
import model as model_config  # noqa: E402
import prepare_data  # noqa: E402
import training  # noqa: E402
import train  # noqa: E402
from bench.accuracy import machine  # noqa: E402
from bench.reference import BATCH_SIZE as REFERENCE_BATCH  # noqa: E402
from bench.reference import plain_epoch  # noqa: E402

keras = lazy_import("keras")  # loaded on first use: --help answers at once
tf = lazy_import("tensorflow")

_FIXED = ("ROOT", "REFERENCE_BATCH")  # not settings: where the repo is, an imported constant
DATA = "../shared/data/train.pkl"  # the data to time, if present; otherwise generated images
TRAIN_IMAGES = 18_082              # training images, as many as the real data's training split
TEST_IMAGES = 6_026                # test images for timed inference (the real test split's size)
EPOCHS = 3                         # timed epochs per configuration; the first also traces
COMMAND_REPEATS = 3                # runs of each timed command; the fastest counts
FOLDER_IMAGES = 30_000             # PNGs in the generated image folder whose framing is timed
OUTPUT = "bench/results/speed.md"  # Markdown copy of the figures


def epoch_timer():
    """A Keras callback that keeps each epoch's seconds in its list `seconds`."""
    starts, seconds = [], []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds.append(time.perf_counter() - starts[-1]))
    timer.seconds = seconds
    return timer


def load_data(data, train_images, test_images):
    """(x_train, y_train, x_test, description): the real split, or generated images of the
    same size made from the embedded digits (speed does not depend on what the strokes show)."""
    path = os.path.join(ROOT, data)
    if os.path.exists(path):
        data = prepare_data.prepare(path, verbose=False)
        return data["x_train"], data["y_train"], data["x_test"], f"real data ({path})"
    digits = prepare_data.prepare(data_format.EMBEDDED, verbose=False)["x_train"]
    rng = np.random.default_rng(0)
    x = digits[rng.integers(0, len(digits), train_images + test_images)]
    y = rng.integers(0, data_format.NUM_CLASSES, train_images)
    return x[:train_images], y, x[train_images:], "generated (embedded digits, resampled)"


def steady_epoch(timer):
    """Median of the epochs after the first (which includes tracing)."""
    return float(np.median(timer.seconds[1:]))


def time_ours(recipe, x, y, augment, epochs):
    """train.py's own pipeline and model (the resolved settings `recipe`), as train.py runs
    them, with augmentation on or off."""
    keras.utils.set_random_seed(0)
    recipe = dataclasses.replace(recipe, augment=augment)
    steps = math.ceil(len(x) / recipe.batch_size)
    model = training.new_model(recipe, steps)
    timer = epoch_timer()
    dataset = train.make_training_dataset(x, y, recipe, 0, epochs)
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return steady_epoch(timer), model


def time_compute_only(recipe, x, y, epochs):
    """An epoch's worth of steps on one batch already in memory: no input pipeline at all."""
    model = training.new_model(recipe)
    batch_size = recipe.batch_size
    batch = (tf.constant(x[:batch_size].reshape(-1, 56, 56, 1), tf.float32),
             tf.one_hot(y[:batch_size], data_format.NUM_CLASSES))
    steps = len(x) // batch_size
    timer = epoch_timer()
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=steps,
              epochs=epochs, callbacks=[timer], verbose=0)
    return steady_epoch(timer) * len(x) / (steps * batch_size)


def time_plain(recipe, x, y, augment, batch_size, epochs):
    keras.utils.set_random_seed(0)
    model = training.new_model(recipe)
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        plain_epoch(model, x, keras.utils.to_categorical(y, data_format.NUM_CLASSES),
                    batch_size, augment, seed=epoch)
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds[1:]))


def images_per_second(model, x):
    inference.probabilities(model, x[:2048])  # warm up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        inference.probabilities(model, x)
        best = min(best, time.perf_counter() - started)
    return len(x) / best


def peak_flops():
    """Best float32 matmul rate of 3 tries on this machine, in FLOP/s."""
    a = tf.random.normal((2048, 2048))
    tf.matmul(a, a).numpy()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(10):
            c = tf.matmul(a, a)
        c.numpy()
        best = min(best, time.perf_counter() - started)
    return 10 * 2 * 2048 ** 3 / best


def training_flops_per_image(model):
    """Multiply-adds of the conv and dense layers x 2 x 3 (forward, and backward ~2x)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels = layer.output.shape
            kernel = np.prod(layer.kernel.shape[:3])
            total += height * width * channels * kernel
        elif isinstance(layer, keras.layers.Dense):
            total += np.prod(layer.kernel.shape)
    return 2 * 3 * total


def loading_seconds(x, y):
    """(first, later) seconds of prepare_data.prepare() on a pickle of these images: the first
    call unpickles, validates, splits and caches; later calls read the packed cache."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "train.pkl")
        with open(path, "wb") as f:
            pickle.dump((x, y), f)
        times = []
        for _ in range(2):
            started = time.perf_counter()
            prepare_data.prepare(path, prepared_dir=folder, verbose=False)
            times.append(time.perf_counter() - started)
    return times


def command_seconds(command, cwd, exit_code, repeats=3):
    """The fastest of `repeats` runs of one of the project's scripts, start to finish, as a
    user's shell runs it: `command` is the script and its arguments; each run must end with
    `exit_code`."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, os.path.join(ROOT, command[0]), *command[1:]],
                              cwd=cwd, capture_output=True, text=True)
        best = min(best, time.perf_counter() - started)
        if done.returncode != exit_code:
            raise RuntimeError(f"{' '.join(command)} ended with {done.returncode}: "
                               f"{done.stderr[-1000:]}")
    return best


def time_commands(model, x, report, repeats=COMMAND_REPEATS):
    """--help, a mistake, and predict.py on one image file with a checkpoint of `model`."""
    from PIL import Image
    with tempfile.TemporaryDirectory() as folder:
        model.save(os.path.join(folder, "best.keras"))
        with open(os.path.join(folder, "best.json"), "w") as f:
            json.dump({"data": {"source": "timed.pkl", "source_sha256": "0" * 64, "seed": 0,
                                "stroke_width": 3.0}}, f)
        Image.fromarray(x[0].reshape(56, 56) * 255).save(os.path.join(folder, "one.png"))
        for command, exit_code in ((["train.py", "--help"], 0), (["evaluate.py", "--help"], 0),
                                   (["predict.py", "--help"], 0),
                                   (["train.py", "--data=/nonexistent.pkl"], 2),
                                   (["evaluate.py", "--checkpoint=missing.keras"], 2),
                                   (["predict.py", "--checkpoint=best.keras", "one.png",
                                     "--lite=False"], 0)):
            report(f"command: python {' '.join(command)}",
                   command_seconds(command, folder, exit_code, repeats), "s")
        one_file = ["predict.py", "--checkpoint=best.keras", "one.png"]
        report("command: python predict.py --checkpoint=best.keras one.png, first run (also "
               "writes the LiteRT copies)", command_seconds(one_file, folder, 0, 1), "s")
        report("command: python predict.py --checkpoint=best.keras one.png (from the copies)",
               command_seconds(one_file, folder, 0, repeats), "s")


def generated_pngs(x, count):
    """`count` PNGs (bytes) of the images `x` (cycled), drawn dark on light at 112 to 448
    pixels a side."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for index in range(count):
        side = int(rng.integers(112, 449))
        drawn = Image.fromarray((255 - 255 * x[index % len(x)].reshape(56, 56)).astype(np.uint8))
        buffer = io.BytesIO()
        drawn.resize((side, side), Image.BILINEAR).save(buffer, "PNG")
        yield buffer.getvalue()


def framing_images_per_second(x, count=200):
    """How many image files a second framing.py frames one by one (what predict.py does to
    each file): `count` generated_pngs, decoded and framed in this process."""
    import framing
    files = list(generated_pngs(x, count))
    framing.read_image_file(files[0], "the first file")  # traces the framing once
    started = time.perf_counter()
    for raw in files:
        framing.read_image_file(raw, "a timed file")
    return len(files) / (time.perf_counter() - started)


def folder_images_per_second(x, y, count):
    """How many images a second a folder of `count` generated_pngs (a class subfolder per
    label) is framed, as its first preparation frames it: image_folders.read_image_folder,
    timed from its start (the worker processes' start counted) to its end."""
    import image_folders
    with tempfile.TemporaryDirectory() as work:
        folder = os.path.join(work, "images")
        for index, raw in enumerate(generated_pngs(x, count)):
            path = os.path.join(folder, str(y[index % len(y)]), f"{index}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(raw)
        names, files = image_folders.folder_classes(folder)
        started = time.perf_counter()
        image_folders.read_image_folder(folder, names, files, os.path.join(work, "framing"),
                                        verbose=False)
        return count / (time.perf_counter() - started)


def peak_memory_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    # the model settings too: --stride_1=1 times another model
    settings = configure(globals(), vars(model_config), argv=argv)
    start_tensorflow()
    epochs = settings.epochs
    x, y, x_test, description = load_data(settings.data, settings.train_images,
                                          settings.test_images)
    # train.py's defaults with these model sizes, resolved for this many images as it would
    recipe, _ = train.resolve(train.defaults(**pick(settings, vars(model_config))), len(x))
    print(f"data: {description}: {len(x)} training and {len(x_test)} test images; "
          f"batch {recipe.batch_size}; {machine()}", flush=True)
    print(f"model: {training.new_model(recipe).count_params():,} parameters", flush=True)
    rows = []

    def report(name, value, unit):
        rows.append((name, value, unit))
        print(f"{name:<58} {value:>10.2f} {unit}", flush=True)

    first, cached = loading_seconds(np.concatenate([x, x_test]),
                                    np.concatenate([y, y[:len(x_test)]]))
    report("loading a pickle of all images: first prepare()", first, "s")
    report("loading it again: the packed cache", cached, "s")
    flops = peak_flops()
    report("peak matmul rate (float32, 2048x2048)", flops / 1e9, "GFLOP/s")
    off, _ = time_ours(recipe, x, y, False, epochs)
    report("ours: epoch, augmentation off", off, "s")
    on, model = time_ours(recipe, x, y, True, epochs)
    report("ours: epoch, augmentation on", on, "s")
    report("ours: evaluation", images_per_second(model, x_test), "images/s")
    report("ours: peak memory so far", peak_memory_mb(), "MB")
    time_commands(model, x_test, report, settings.command_repeats)
    one_by_one = framing_images_per_second(x_test)
    report("framing image files one by one (framing.py; PNGs of 112-448 px)", one_by_one,
           "images/s")
    folder = folder_images_per_second(x_test, y, settings.folder_images)
    report(f"framing a folder of {settings.folder_images:,} such PNGs (image_folders.py)",
           folder, "images/s")
    report("framing a folder: speed-up against one by one (framing.py)", folder / one_by_one, "x")
    floor = training_flops_per_image(model) * len(x) / flops
    report("compute floor: training FLOPs / peak rate", floor, "s")
    compute = time_compute_only(recipe, x, y, epochs)
    report("ours: epoch with no input pipeline (one cached batch)", compute, "s")
    plain_off = time_plain(recipe, x, y, False, recipe.batch_size, epochs)
    report("plain way, our batch size: epoch, augmentation off", plain_off, "s")
    plain_on = time_plain(recipe, x, y, True, recipe.batch_size, epochs)
    report("plain way, our batch size: epoch, augmentation on", plain_on, "s")
    plain_ref = time_plain(recipe, x, y, True, REFERENCE_BATCH, epochs)
    report(f"plain way, the reference's batch of {REFERENCE_BATCH}: augmentation on", plain_ref,
           "s")
    tf.config.experimental.enable_op_determinism()  # last: it cannot be switched off again
    deterministic, _ = time_ours(recipe, x, y, True, epochs)
    report("ours: epoch, augmentation on, DETERMINISTIC=True", deterministic, "s")
    report("peak memory of this process", peak_memory_mb(), "MB")
    ratios = [
        ("augmentation cost: ours on / ours off", on / off, ""),
        ("speed-up, augmentation on: plain way / ours (same batch)", plain_on / on, ""),
        ("speed-up, augmentation on: reference's batch / ours", plain_ref / on, ""),
        ("speed-up, augmentation off: plain way / ours (same batch)", plain_off / off, ""),
        ("ours (augmentation on) / compute floor", on / floor, "1.0 = at the floor"),
        ("no-pipeline epoch / compute floor (kernel efficiency)", compute / floor, ""),
        ("determinism cost: deterministic / default epoch", deterministic / on, ""),
    ]
    print()
    for name, value, note in ratios:
        print(f"{name:<58} {value:>10.2f}x  {note}")
    lines = [f"`python bench/speed.py {' '.join(sys.argv[1:])}`".replace(" `", "`"), "",
             f"{time.strftime('%Y-%m-%d')}, {machine()}; data: {description}", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value:,.2f} {unit} |" for name, value, unit in rows]
    lines += [f"| {name} | **{value:.2f}x** {note} |" for name, value, note in ratios]
    output = os.path.join(ROOT, settings.output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"\nwrote {output}")


if __name__ == "__main__":
    run(main)
