"""What starting from a trained model buys on a small set: train.py on a few images per class,
from scratch and from each given checkpoint (--init_from), scored on each small set's own test
split.

    python train.py --data=../shared/data/dev36.npz --seed=1 --out_dir=bench/runs/from/dev36
    python train.py --out_dir=bench/runs/from/digits          # the embedded digits
    python bench/starting_points.py --data=../shared/data/letters26-dev.npz \
        --sources=bench/runs/from/dev36/best.keras,bench/runs/from/digits/best.keras

For each seed and each --per_class, a small set is drawn from --data: about per_class / 0.6
images of each class (all of a class that has fewer), so that train.py's 60/20/20 split trains
on about per_class of each. Every starting point trains on the same small set with the same
seed, as `python train.py --data=SMALL --seed=S [--init_from=SOURCE]` does. A run that
finished with the same settings in --work_dir is not trained again.
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import UserError, configure, run  # noqa: E402
import evaluate  # noqa: E402
import inference  # noqa: E402
import prepare_data  # noqa: E402
import run_state  # noqa: E402
import train  # noqa: E402

_FIXED = ("ROOT",)  # not a setting: where the repo is
DATA = "../shared/data/letters26-dev.npz"  # the set the small sets are drawn from
SOURCES = ""                 # checkpoints to start from, comma-separated (scratch is always run)
PER_CLASS = "10,30,100"      # training images per class of each small set
SEEDS = "1,2,3"              # each seed draws its own small sets, splits and initialisations
TRAIN_ARGS = ""              # extra overrides for train.py, e.g. "--epochs=2"
WORK_DIR = "bench/runs/starting_points"  # small sets and runs (not in git)
OUTPUT = "bench/results/starting-points.md"  # the Markdown table
_RANGES = {}


def numbers(text, name):
    try:
        values = [int(word) for word in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UserError(f"--{name}={text}: expected whole numbers such as 10,30")
    return values


def small_set(x, y, per_class, seed, path):
    """Writes (and returns the path of) an .npz of about per_class / 0.6 images of each class
    of (x, y), drawn with `seed`."""
    rng = np.random.default_rng([seed, per_class])
    wanted = int(np.ceil(per_class / 0.6))
    chosen = np.concatenate([rng.permutation(np.flatnonzero(y == label))[:wanted]
                             for label in np.unique(y)])
    np.savez_compressed(path, x_packed=np.packbits(x[chosen], axis=1), y=y[chosen])
    return path


def finished(out_dir, source, overrides):
    """Whether out_dir holds a finished run from `source` with these train.py overrides."""
    record = run_state.read_json(os.path.join(out_dir, "best.json"))
    return bool(record) and not os.path.isdir(os.path.join(out_dir, "resume")) and \
        record["settings"].get("INIT_FROM") == source and all(
            str(record["settings"].get(key.upper())) == value for key, value in overrides.items())


def test_accuracy(out_dir, prepared_dir):
    checkpoint = os.path.join(out_dir, "best.keras")
    model, record = inference.load_checkpoint(checkpoint)
    x, y = evaluate.load_split(record, "test", prepared_dir=prepared_dir)
    return float(np.mean(inference.probabilities(model, x).argmax(1) == y)), len(y)


def main(argv=None):
    settings = configure(globals(), argv=argv)
    sizes, seeds = numbers(settings.per_class, "per_class"), numbers(settings.seeds, "seeds")
    sources = [""] + [path for path in settings.sources.split(",") if path]
    for path in sources[1:]:
        inference.read_record(path)  # a missing checkpoint answers now
    prepared_dir = os.path.join(settings.work_dir, "data")
    full = prepare_data.prepare(settings.data, 1, prepared_dir, verbose=False)
    x, y = full["x"], full["y"]
    results = {}
    for size in sizes:
        for seed in seeds:
            data = small_set(x, y, size, seed, os.path.join(
                settings.work_dir, f"{os.path.splitext(os.path.basename(settings.data))[0]}"
                                   f"-{size}-per-class-seed{seed}.npz"))
            for number, source in enumerate(sources):
                out_dir = os.path.join(settings.work_dir, f"runs/{size}-seed{seed}-from{number}")
                overrides = dict(arg.lstrip("-").split("=", 1)
                                 for arg in settings.train_args.split())
                if not finished(out_dir, source, overrides):
                    train.main([f"--data={data}", f"--seed={seed}", f"--out_dir={out_dir}",
                                f"--prepared_dir={prepared_dir}", f"--init_from={source}",
                                "--fresh=True", "--set_aside=True", "--verbose=0",
                                *[f"--{key}={value}" for key, value in overrides.items()]])
                accuracy, images = test_accuracy(out_dir, prepared_dir)
                results.setdefault((size, number), []).append(accuracy)
                print(f"{size} per class, seed {seed}, from {source or 'scratch'}: test accuracy "
                      f"{accuracy:.4f} ({images} images)", flush=True)
    lines = [f"`python bench/starting_points.py --data={settings.data} --sources="
             f"{settings.sources} --per_class={settings.per_class} --seeds={settings.seeds}"
             f"{' --train_args=' + repr(settings.train_args) if settings.train_args else ''}`",
             "", "| training images per class | "
             + " | ".join(f"from {source}" if source else "from scratch" for source in sources)
             + " |", "|---" * (len(sources) + 1) + "|"]
    for size in sizes:
        cells = [f"{np.mean(results[size, n]):.4f} +- {np.std(results[size, n]):.4f} "
                 f"({len(results[size, n])})" for n in range(len(sources))]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    lines += ["", "Test accuracy of each small set's own test split, mean +- std over seeds "
                  "(number of seeds)."]
    os.makedirs(os.path.dirname(os.path.abspath(settings.output)), exist_ok=True)
    with open(settings.output, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    run(main)
