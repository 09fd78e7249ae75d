"""Which training settings win on data they were not chosen on: a lever study.

    python bench/levers.py                                   # every lever, dataset and seed
    python bench/levers.py --only=baseline,no-augmentation --datasets=letters26,dev36-small
    python bench/levers.py --quick=True                      # 1 seed, 3 datasets: iterating
    python bench/levers.py --run=False                       # the table from cached runs only
    python bench/levers.py --only=baseline,dense-1024 --finalists=dense-1024 --split=test

Each lever is a name and a set of train.py overrides (the LEVERS table below). Every run goes
through exactly the path a user runs: `python train.py --data=... --seed=S <overrides>`, scored
by the validation accuracy its record keeps (what `python evaluate.py --split=val` prints).
Defaults are chosen on that table; `--split=test` scores the
same runs' checkpoints on their test splits (training only what is not cached), for the final
check of the finalists, and labels the table so. Runs are cached by (data, seed, overrides) in
WORK_DIR, so a grown list only pays for what is new; after a change to train.py that alters
what it computes, start from an empty WORK_DIR.

The table (OUTPUT, rewritten after every run) gives per lever and dataset the mean +- std of
the validation accuracy over its seeds, the change against the baseline (the current defaults)
weighted towards letters26, the mean rank across datasets, and epochs and minutes per run on
dev36 (the real data's size). Runs share the machine (JOBS at a time), so minutes are slower
than a run alone; bench/speed.py times a run alone.

Datasets, in different regimes (the made ones are built here from dev36 or letters26 with a
fixed seed, into WORK_DIR/datasets):
  letters26     22,018 real handwritten letters, 26 classes: closest to the users' images
  letters26-small  3,000 of them (stratified): real handwriting, small
  letters26-medium 8,000 of them (stratified): real handwriting, between small and the whole
  letters26-large  15,000 of them (stratified): real handwriting, towards the users' size
  dev36         30,134 synthetic font characters, 36 classes, the real label counts
  dev36-small   3,000 of dev36 (stratified): small and imbalanced
  dev36-large   15,000 of dev36 (stratified): half of it
  dev36-hard    all of dev36, harder: elastic warps, rotation and shear, a third of the
                images with thicker strokes and a third with broken ones, reframed, and 4% of
                the labels replaced by another class (in every split)
  embedded      the embedded default: 5,000 real MNIST digits, 10 classes
"""
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import UserError, configure, run, write_text_atomic  # noqa: E402
import data_format  # noqa: E402
import data_sources  # noqa: E402

SHARED = os.path.join(ROOT, "..", "shared", "data")
_FIXED = ("ROOT", "SHARED")  # not settings: where the repo and the shared datasets are
LEVERS = [  # (name, train.py overrides): one lever at a time against the baseline (the defaults)
    ("baseline", ""),
    ("the defaults before the study",
     "--learning_rate=1e-3 --dense_units=256 --augment_epochs=0 --lr_schedule=plateau"),
    ("the defaults before the size rule", "--lr_schedule=plateau --augment_epochs=15"),
    ("no augmentation", "--augment=False"),
    ("augment throughout", "--augment_epochs=0"),
    ("augment 10 epochs, then clean", "--augment_epochs=10"),
    ("augment 25 epochs, then clean", "--augment_epochs=25"),
    ("milder augmentation", "--crop_px=2 --scale=0.05 --rotate=6"),
    ("stronger augmentation", "--crop_px=5 --scale=0.2 --rotate=20"),
    ("augment half the images", "--share=0.5"),
    ("stroke width +-1 px on half", "--stroke=0.5"),
    ("elastic bending, 2 px", "--elastic=2"),
    ("dropout 0.2", "--dropout=0.2"),
    ("dropout 0.3", "--dropout=0.3"),
    ("dense 256", "--dense_units=256"),
    ("dense 1024", "--dense_units=1024"),
    ("filters 16/32", "--filters_1=16 --filters_2=32"),
    ("filters 48/96", "--filters_1=48 --filters_2=96"),
    ("batch 32", "--batch_size=32"),
    ("batch 128", "--batch_size=128"),
    ("batch 256, rate 4e-3", "--batch_size=256 --learning_rate=4e-3"),
    ("rate 1e-3", "--learning_rate=1e-3"),
    ("rate 4e-3", "--learning_rate=4e-3"),
    ("cosine decay, 30 epochs", "--lr_schedule=cosine --epochs=30 --patience=30"),
    ("label smoothing 0.1", "--label_smoothing=0.1"),
    ("AdamW decay 0.05", "--weight_decay=0.05"),
    ("kernel 5 in the second convolution", "--kernel_2=5"),
    ("augment 30 epochs, patience 10", "--augment_epochs=30 --patience=10"),
    ("cosine decay over 60 epochs, augment throughout",
     "--lr_schedule=cosine --epochs=60 --patience=60 --augment_epochs=0"),
    ("cosine decay over 60 epochs", "--lr_schedule=cosine --epochs=60 --patience=60"),
    ("stride 1 in the first convolution", "--stride_1=1"),
    ("filters 64/128", "--filters_1=64 --filters_2=128"),
    ("dropout 0.5", "--dropout=0.5"),
    ("cosine decay over 40 epochs", "--lr_schedule=cosine --epochs=40"),
    ("kernel 7 in the first convolution", "--kernel_1=7"),
    ("bfloat16 compute", "--precision=mixed_bfloat16"),
    ("balanced class weights", "--class_weight=balanced"),
]
FINALISTS = ""             # comma-separated lever names that get 3 seeds instead of --seeds
DATASET_NAMES = ("letters26", "letters26-small", "letters26-medium", "letters26-large", "dev36",
                 "dev36-small", "dev36-large", "dev36-hard", "embedded")
SUBSET_SIZES = {"small": 3000, "medium": 8000, "large": 15000}  # images in the made subsets
WEIGHTS = {"letters26": 2.0}  # weight in the mean change (others 1): real handwriting counts most
SEEDS = 2                  # seeds 1 to this for every lever; each gives its own split
ONLY = ""                  # comma-separated lever names (or their slugs) to run; all if empty
DATASETS = ""              # comma-separated dataset names, or paths of your own .pkl/.npz files
                           # (named by their file name); all the named datasets if empty
TRAIN_ARGS = ""            # overrides added to every run, e.g. "--epochs=20" (part of the cache key)
JOBS = 2                   # runs at once, each with (CPU cores / this) threads
RUN = True                 # False: train nothing, only write the table from the cached runs
SPLIT = "val"              # the split scored: val to choose; test only for the final check
                           # (written to --output with -test before .md)
QUICK = False              # True: 1 seed, datasets letters26, dev36-small and embedded; labelled
WORK_DIR = "bench/runs/levers"  # datasets, runs and the cache (not in git)
OUTPUT = "bench/results/levers.md"  # the Markdown table (-quick.md in quick mode)


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ---------------------------------------------------------------------------- datasets

def load_npz(path):
    with np.load(path) as data:
        return np.unpackbits(data["x_packed"], axis=1), data["y"]


def save_npz(path, x, y):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path + ".tmp.npz", x_packed=np.packbits(x.astype(np.uint8), axis=1), y=y)
    os.replace(path + ".tmp.npz", path)


def stratified_subset(y, size, seed):
    """Indices of about `size` images, the same share of every class (at least one each)."""
    rng = np.random.default_rng(seed)
    share = size / len(y)
    chosen = [rng.permutation(np.flatnonzero(y == label))[:max(1, round(share * np.sum(y == label)))]
              for label in np.unique(y)]
    return np.sort(np.concatenate(chosen))


def harden(x, y, seed):
    """dev36-hard from dev36: see the module docstring."""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    side = data_format.SIDE
    grid = np.mgrid[0:side, 0:side].astype(np.float64)
    out = np.zeros_like(x)
    for i, flat in enumerate(x):
        image = flat.reshape(side, side).astype(np.float64)
        # elastic: a smooth random displacement of up to ~3 px, then rotation and shear
        shift = [ndimage.gaussian_filter(rng.uniform(-1, 1, (side, side)), 5) * 60
                 for _ in range(2)]
        angle, shear = np.radians(rng.uniform(-15, 15)), rng.uniform(-0.3, 0.3)
        centred = grid - (side - 1) / 2
        rows = np.cos(angle) * centred[0] - np.sin(angle) * centred[1]
        cols = np.sin(angle) * centred[0] + np.cos(angle) * centred[1] + shear * centred[0]
        coords = [rows + (side - 1) / 2 + shift[0], cols + (side - 1) / 2 + shift[1]]
        ink = ndimage.map_coordinates(image, coords, order=1) >= 0.5
        kind = rng.integers(3)
        if kind == 1:  # a thicker pen
            ink = ndimage.binary_dilation(ink, np.ones((3, 3)))
        elif kind == 2 and ink.any():  # broken strokes: three gaps cut where the ink is
            for row, col in np.argwhere(ink)[rng.integers(0, ink.sum(), 3)]:
                ink[max(row - 3, 0):row + 3, max(col - 3, 0):col + 3] = False
        out[i] = data_sources.frame_character(ink.astype(np.float64)).ravel()
    noisy = rng.random(len(y)) < 0.04
    labels = np.unique(y)
    y = y.copy()
    for i in np.flatnonzero(noisy):  # another class, drawn uniformly
        y[i] = rng.choice(labels[labels != y[i]])
    return out, y


def dataset_path(name, work_dir):
    """The file for a dataset name, made first if it is one of the made ones; a path to a
    file of your own is taken as it is."""
    if name not in DATASET_NAMES:
        if not os.path.isfile(name):
            raise UserError(f"unknown dataset {name}: choose from {', '.join(DATASET_NAMES)}, "
                            f"or give the path of a .pkl or .npz file")
        return os.path.abspath(name)
    sources = {"letters26": os.path.join(SHARED, "letters26-dev.npz"),
               "dev36": os.path.join(SHARED, "dev36.npz"), "embedded": data_format.EMBEDDED}
    if name in sources:
        return sources[name]
    path = os.path.join(work_dir, "datasets", f"{name}.npz")
    if not os.path.exists(path):
        base = sources[name.split("-")[0]]
        print(f"making {path} from {base}", flush=True)
        x, y = load_npz(base)
        size = SUBSET_SIZES.get(name.split("-")[1])
        if size:
            keep = stratified_subset(y, size, seed=0)
            x, y = x[keep], y[keep]
        else:
            x, y = harden(x, y, seed=0)
        save_npz(path, x, y)
    return path


# ---------------------------------------------------------------------------- runs

@functools.lru_cache(maxsize=None)
def data_id(path):
    """What identifies a dataset in the cache: its file's sha256 (or "embedded")."""
    if path == data_format.EMBEDDED:
        return path
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def all_overrides(overrides, train_args):
    """A lever's overrides and --train_args, as train.py arguments."""
    return f"{overrides} {train_args}".split()


def run_key(data_path, seed, overrides, train_args):
    words = " ".join(sorted(all_overrides(overrides, train_args)))
    return hashlib.sha256(f"{data_id(data_path)} {seed} {words}".encode()).hexdigest()[:16]


def job_env(jobs):
    """The environment of a run: CPU cores / jobs threads, so that `jobs` runs share the
    cores."""
    threads = str(max(1, (os.cpu_count() or 2) // jobs))
    return {**os.environ, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads,
            "OMP_NUM_THREADS": threads}


def train_and_validate(data_path, seed, overrides, work_dir, settings):
    """One run as a user runs it; returns {val, epochs, best_epoch, seconds} (cached)."""
    arguments = all_overrides(overrides, settings.train_args)
    key = run_key(data_path, seed, overrides, settings.train_args)
    cache = os.path.join(work_dir, "cache", f"{key}.json")
    if os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)
    out_dir = os.path.join(work_dir, "runs", key)
    common = [f"--prepared_dir={os.path.join(work_dir, 'data')}"]
    started = time.time()
    trained = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--data={data_path}",
         f"--seed={seed}", f"--out_dir={out_dir}", "--verbose=2", "--fresh=True", *common,
         *arguments], capture_output=True, text=True, env=job_env(settings.jobs))
    seconds = time.time() - started
    if trained.returncode:
        raise UserError(f"train.py {overrides} failed on {data_path}, seed {seed}: "
                        f"{trained.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(out_dir, "best.json")) as f:
        record = json.load(f)
    # (the record's validation accuracy is evaluate.py --split=val's: the same model, split and
    # argmax; reading it spares a process that would start TensorFlow again)
    result = {"val": record["val_accuracy"],
              "epochs": len(record["history"]), "best_epoch": record["best_epoch"],
              "seconds": seconds, "data": data_path, "seed": seed,
              "overrides": " ".join(arguments)}
    write_text_atomic(cache, json.dumps(result) + "\n")
    return result


def score(out_dir, split, work_dir, jobs):
    """A run's accuracy on a split of its data, as `python evaluate.py --split=...` prints it."""
    scored = subprocess.run(
        [sys.executable, os.path.join(ROOT, "evaluate.py"), f"--split={split}",
         f"--checkpoint={os.path.join(out_dir, 'best.keras')}",
         f"--prepared_dir={os.path.join(work_dir, 'data')}"],
        capture_output=True, text=True, env=job_env(jobs))
    match = re.search(rf"{split} accuracy: (\d\.\d+)", scored.stdout)
    if not match:
        raise UserError(f"evaluate.py failed on {out_dir}: {scored.stderr.strip()[-500:]}")
    return float(match.group(1))


def with_test_score(data_path, seed, overrides, work_dir, settings):
    """The cached run (trained first if need be) with its test accuracy added to its record."""
    result = train_and_validate(data_path, seed, overrides, work_dir, settings)
    if "test" not in result:
        key = run_key(data_path, seed, overrides, settings.train_args)
        result["test"] = score(os.path.join(work_dir, "runs", key), "test", work_dir,
                               settings.jobs)
        write_text_atomic(os.path.join(work_dir, "cache", f"{key}.json"),
                          json.dumps(result) + "\n")
    return result


# ---------------------------------------------------------------------------- the table

def cached_results(levers, datasets, work_dir, seeds_of, split, train_args):
    """{(lever, dataset): [result per finished seed] scored on `split`} from the cache alone."""
    results = {}
    for name, overrides in levers:
        for dataset, path in datasets.items():
            rows = []
            for seed in range(1, seeds_of(name) + 1):
                key = run_key(path, seed, overrides, train_args)
                cache = os.path.join(work_dir, "cache", f"{key}.json")
                if os.path.exists(cache):
                    with open(cache) as f:
                        record = json.load(f)
                    if split in record:  # test scores exist only for runs given --split=test
                        rows.append(record)
            results[name, dataset] = rows
    return results


def mean_of(values, spec):
    return format(np.mean(values), spec) if values else "-"


def table(levers, datasets, results, title, split):
    means = {key: np.mean([r[split] for r in rows]) for key, rows in results.items() if rows}
    ranks = {}
    for dataset in datasets:
        scored = sorted((means[name, dataset], name) for name, _ in levers
                        if (name, dataset) in means)
        for position, (_, name) in enumerate(reversed(scored)):
            ranks[name, dataset] = position + 1
    head = " | ".join(datasets)
    lines = [title, "", f"| lever | overrides | {head} | change vs baseline | mean rank | "
             f"epochs | min (dev36) |", "|---" * (len(datasets) + 6) + "|"]
    for name, overrides in levers:
        cells, changes, weights = [], [], []
        for dataset in datasets:
            rows = results[name, dataset]
            if not rows:
                cells.append("-")
                continue
            values = [r[split] for r in rows]
            spread = f" +- {np.std(values, ddof=1):.4f}" if len(values) > 1 else ""
            cells.append(f"{np.mean(values):.4f}{spread} ({len(values)})")
            if ("baseline", dataset) in means:
                changes.append(means[name, dataset] - means["baseline", dataset])
                weights.append(WEIGHTS.get(dataset, 1.0))
        change = f"{100 * np.average(changes, weights=weights):+.2f}" if changes else "-"
        rank = [ranks[name, d] for d in datasets if (name, d) in ranks]
        epochs = [r["epochs"] for d in datasets for r in results[name, d]]
        minutes = [r["seconds"] / 60 for r in results[name, "dev36"]] if "dev36" in datasets \
            else []
        lines.append(f"| {name} | `{overrides}` | {' | '.join(cells)} | {change} | "
                     f"{mean_of(rank, '.1f')} | {mean_of(epochs, '.0f')} | "
                     f"{mean_of(minutes, '.1f')} |")
    lines += ["", f"{'Test' if split == 'test' else 'Validation'} accuracy, mean +- std over seeds (number of seeds); change: "
              "the mean over datasets of (lever - baseline), in points, letters26 counted "
              f"{WEIGHTS['letters26']:g}x; rank 1 is best on a dataset."]
    return "\n".join(lines)


def main(argv=None):
    settings = configure(globals(), argv=argv)
    split = settings.split
    if split not in ("val", "test"):
        raise UserError(f"--split={split}: choose val or test")
    if settings.quick:  # resolved once: the quick mode's seeds and datasets
        settings = dataclasses.replace(
            settings, seeds=1, datasets=settings.datasets or "letters26,dev36-small,embedded")
    work_dir = os.path.join(ROOT, settings.work_dir)
    names = [d for d in settings.datasets.split(",") if d] or list(DATASET_NAMES)
    datasets = {os.path.splitext(os.path.basename(name))[0] if name not in DATASET_NAMES
                else name: dataset_path(name, work_dir) for name in names}
    wanted = {w for w in settings.only.split(",") if w}
    levers = [(name, o) for name, o in LEVERS if not wanted or name in wanted or slug(name) in wanted]
    if not levers:
        raise UserError(f"no lever named {settings.only}: see the LEVERS table in {__file__}")
    finalists = {f for f in settings.finalists.split(",") if f}

    def seeds_of(name):
        return 3 if name in finalists or slug(name) in finalists else settings.seeds
    jobs = [(seed, name, overrides, dataset) for seed in range(1, 4) for name, overrides in levers
            for dataset in datasets if seed <= seeds_of(name)]
    mode = "QUICK MODE (1 seed, 3 datasets): for iterating, not for choosing defaults. " \
        if settings.quick else ""
    if split == "test":
        mode += "TEST SPLITS: the final check of the defaults chosen on validation. "
    suffix = ("-quick" if settings.quick else "") + ("-test" if split == "test" else "")
    output = os.path.join(ROOT, settings.output.replace(".md", f"{suffix}.md"))
    command = "python bench/levers.py " + " ".join(sys.argv[1:])
    title = f"### {mode}Lever study\n\n`{command.strip()}`  \n{time.strftime('%Y-%m-%d')}, " \
            f"{machine()}"
    if settings.run:
        print(f"{mode}{len(levers)} levers x {len(datasets)} datasets: {len(jobs)} runs "
              f"(cached ones are free), {settings.jobs} at a time", flush=True)

    def one(job):
        seed, name, overrides, dataset = job
        score_run = with_test_score if split == "test" else train_and_validate
        result = score_run(datasets[dataset], seed, overrides, work_dir, settings)
        print(f"{name:<32} {dataset:<16} seed {seed}: {split} {result[split]:.4f}  "
              f"epochs {result['epochs']:>3}  {result['seconds']:.0f} s", flush=True)
        return job

    shown = [lever for lever in LEVERS if lever[0] == "baseline" or lever in levers]

    def write_table():
        results = cached_results(shown, datasets, work_dir, seeds_of, split, settings.train_args)
        markdown = table(shown, datasets, results, title, split)
        os.makedirs(os.path.dirname(output), exist_ok=True)
        write_text_atomic(output, markdown + "\n")
        return markdown

    with concurrent.futures.ThreadPoolExecutor(settings.jobs) as pool:
        for _ in pool.map(one, jobs if settings.run else []):
            write_table()
    print("\n" + write_table() + f"\n\nwrote {output}")


def machine():
    from bench.accuracy import machine as describe
    return describe()


if __name__ == "__main__":
    run(main)
