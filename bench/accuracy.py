"""Accuracy of our default recipe against the reference recipe, over seeds, on one dataset.

    python bench/accuracy.py --data=../shared/data/dev36.npz --seeds=3
    python bench/accuracy.py --data=embedded --seeds=3 --reference_augment=True
    python bench/accuracy.py --data=../shared/data/dev36.npz --quick=True   # for iterating

For each seed both recipes get the same seeded 60/20/20 split. Ours runs exactly as a user runs
it: `train.py` then `evaluate.py`, as subprocesses, with --seed and any --train_args. The
reference is bench/reference.py. Prints per seed and mean +- std (test accuracy, error, epochs,
wall time) and the error reduction 1 - err_ours / err_ref, and writes the table as Markdown.
"""
import dataclasses
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import configure, run, start_tensorflow  # noqa: E402
import prepare_data  # noqa: E402
from bench.reference import STEPS, train_reference  # noqa: E402

_FIXED = ("ROOT", "STEPS")  # not settings: where the repo is, and an imported default
DATA = "../shared/data/dev36.npz"  # a train.pkl, an .npz (x_packed or x, y), or "embedded"
SEEDS = 3                  # seeds 1 to this; each gives its own split and initialisation
REFERENCE_AUGMENT = False  # True: the reference with its imgaug pipeline on every batch
REFERENCE_STEPS = STEPS    # the reference trains this many batches of 32
TRAIN_ARGS = ""            # extra overrides for train.py, e.g. "--dropout=0.3 --batch_size=128"
QUICK = False              # True: iterate fast, 1 seed and 4,000 reference steps; not final
WORK_DIR = "bench/runs"    # runs and cached reference results (not in git)
OUTPUT = ""                # Markdown table (default: bench/results/accuracy-<data>.md)


def dataset_name(data):
    return os.path.splitext(os.path.basename(data))[0]


def run_ours(settings, seed, work_dir):
    out_dir = os.path.join(work_dir, f"ours-{dataset_name(settings.data)}-seed{seed}")  # one per dataset
    common = [f"--prepared_dir={os.path.join(work_dir, 'data')}"]
    # a run of other --train_args would keep this folder's better model: start with none
    shutil.rmtree(out_dir, ignore_errors=True)
    started = time.time()
    trained = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--data={settings.data}",
         f"--seed={seed}", f"--out_dir={out_dir}", "--verbose=0", "--fresh=True", *common,
         *settings.train_args.split()],
        capture_output=True, text=True)
    seconds = time.time() - started
    if trained.returncode:
        sys.exit(f"train.py failed for seed {seed}:\n{trained.stderr[-3000:]}")
    scored = subprocess.run(
        [sys.executable, os.path.join(ROOT, "evaluate.py"), "--split=test",
         f"--checkpoint={os.path.join(out_dir, 'best.keras')}", *common],
        capture_output=True, text=True)
    match = re.search(r"test accuracy: (\d\.\d+)", scored.stdout)
    if not match:
        sys.exit(f"evaluate.py failed for seed {seed}:\n{scored.stderr[-3000:]}")
    with open(os.path.join(out_dir, "best.json")) as f:
        record = json.load(f)
    # (the record's validation accuracy is evaluate.py --split=val's: the same model, split and
    # argmax; reading it spares a process that would start TensorFlow again)
    return {"val": record["val_accuracy"], "test": float(match.group(1)),
            "epochs": len(record["history"]), "seconds": seconds}


def run_reference(settings, seed, work_dir):
    """Trains the reference, or reuses its result for the same data, seed, steps, augment:
    its recipe is fixed, so iterating on ours need not pay for it again."""
    steps, augment = settings.reference_steps, settings.reference_augment
    data = prepare_data.prepare(settings.data, seed, os.path.join(work_dir, "data"),
                                verbose=False)
    cache = os.path.join(work_dir, f"reference-{data['manifest']['source_sha256'][:16]}-seed"
                                   f"{seed}-steps{steps}-augment{augment}.json")
    if os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)
    started = time.time()
    model, epochs = train_reference(data["x_train"], data["y_train"], seed, steps=steps,
                                    augment=augment)
    seconds = time.time() - started
    scores = {}
    for split in ("val", "test"):
        images = data[f"x_{split}"].reshape(-1, 56, 56, 1).astype(np.float32)
        predicted = model.predict(images, batch_size=1024, verbose=0).argmax(1)
        scores[split] = float(np.mean(predicted == data[f"y_{split}"]))
    result = {**scores, "epochs": epochs, "seconds": seconds}
    with open(cache, "w") as f:
        json.dump(result, f)
    return result


def mean_std(rows, key):
    values = np.array([row[key] for row in rows], float)
    return values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    # (the installed version, read without starting TensorFlow: levers.py's table from cached
    # runs needs none)
    try:
        version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:  # installed under another name
        version = "(another distribution)"
    return f"{model}, {os.cpu_count()} cores, {platform.system()}, TensorFlow {version}"


def table(results, title, settings):
    reference = ("reference + imgaug" if settings.reference_augment else "reference") + \
        f" ({settings.reference_steps:,} steps)"
    lines = [title, "", "| recipe | seed | val acc | test acc | test error | epochs | wall s |",
             "|---|---|---|---|---|---|---|"]
    for name, label in (("ours", "ours (train.py defaults" + (f" {settings.train_args}"
                                                              if settings.train_args else "") + ")"),
                        ("ref", reference)):
        for seed, row in results[name]:
            lines.append(f"| {label} | {seed} | {row['val']:.4f} | {row['test']:.4f} | "
                         f"{1 - row['test']:.4f} | {row['epochs']:.1f} | {row['seconds']:.0f} |")
        rows = [row for _, row in results[name]]
        stats = {key: mean_std(rows, key) for key in ("val", "test", "epochs", "seconds")}
        lines.append(f"| **{label}** | mean +- std | {stats['val'][0]:.4f} +- {stats['val'][1]:.4f}"
                     f" | **{stats['test'][0]:.4f} +- {stats['test'][1]:.4f}** | "
                     f"{1 - stats['test'][0]:.4f} | {stats['epochs'][0]:.1f} | "
                     f"{stats['seconds'][0]:.0f} |")
    err_ours = 1 - mean_std([r for _, r in results["ours"]], "test")[0]
    err_ref = 1 - mean_std([r for _, r in results["ref"]], "test")[0]
    reduction = 1 - err_ours / err_ref if err_ref > 0 else float("nan")
    lines += ["", f"Error reduction of ours against the reference (mean test error): "
                  f"**{reduction:.1%}** ({err_ours:.4f} vs {err_ref:.4f})."]
    return "\n".join(lines), reduction


def main(argv=None):
    settings = configure(globals(), argv=argv)
    start_tensorflow()
    if settings.quick:  # resolved once: the quick mode's seeds and steps
        settings = dataclasses.replace(settings, seeds=1,
                                       reference_steps=min(settings.reference_steps, 4000))
    name = dataset_name(settings.data)
    output = settings.output or os.path.join(
        ROOT, "bench", "results", f"accuracy-{name}{'-quick' if settings.quick else ''}.md")
    work_dir = os.path.join(ROOT, settings.work_dir) if settings.work_dir else tempfile.mkdtemp()
    mode = "QUICK MODE (1 seed, fewer reference steps): for iterating, not final figures. " \
        if settings.quick else ""
    print(f"{mode}data {settings.data}, seeds 1..{settings.seeds}, work dir {work_dir}",
          flush=True)
    results = {"ours": [], "ref": []}
    for seed in range(1, settings.seeds + 1):
        for key, runner in (("ours", run_ours), ("ref", run_reference)):
            row = runner(settings, seed, work_dir)
            results[key].append((seed, row))
            print(f"seed {seed} {key:>4}: val {row['val']:.4f}  test {row['test']:.4f}  "
                  f"error {1 - row['test']:.4f}  epochs {row['epochs']:.1f}  "
                  f"{row['seconds']:.0f} s", flush=True)
    command = "python bench/accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    title = (f"### {mode}Accuracy on `{name}`\n\n`{command}`  \n"
             f"{time.strftime('%Y-%m-%d')}, {machine()}")
    markdown, reduction = table(results, title, settings)
    print("\n" + markdown)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        f.write(markdown + "\n")
    print(f"\nwrote {output}")


if __name__ == "__main__":
    run(main)
