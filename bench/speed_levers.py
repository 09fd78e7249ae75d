"""Speed levers, one at a time, each timed against today's training step in one run.

    python bench/speed_levers.py                 # every lever, twice each, interleaved
    python bench/speed_levers.py --only=bfloat16,fused-adam

Each lever runs in its own Python (some must be set before TensorFlow starts: oneDNN, threads)
and times train.py's default model for batches of 64 two ways: on one batch already in memory
(the kernels alone) and fed by train.py's augmented tf.data pipeline (kernels and pipeline
sharing the cores). A time is the fastest of ROUNDS rounds of STEPS steps: the fastest is the
least disturbed by the rest of the machine. The baseline runs before and after every lever, and
a lever's ratio is against those two neighbours, so that the machine's drift during the run
(a shared virtual machine can slow down by half for minutes) does not pass for a lever's
effect.
"""
import functools
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import UserError, configure, lazy_import, run, start_tensorflow, \
    write_text_atomic  # noqa: E402
import model as model_config  # noqa: E402
import training  # noqa: E402
import train  # noqa: E402
from bench.accuracy import machine  # noqa: E402

keras = lazy_import("keras")  # loaded on first use: --help answers at once
tf = lazy_import("tensorflow")

_FIXED = ("ROOT", "LEVERS")  # not settings: where the repo is, and the table below
LEVERS = {  # name: (what it changes, environment variables, what the child does differently)
    "baseline": ("train.py's defaults", {}, ""),
    "fused-adam": ("Adam's update as one TensorFlow kernel per weight (ResourceApplyAdam: "
                   "the same maths and slot variables)", {}, "fused_adam"),
    "space-to-depth": ("the first convolution as a 3x3 stride-1 convolution on 2x2 blocks of "
                       "pixels (28x28x4), the same function", {}, "space_to_depth"),
    "bfloat16": ("--precision=mixed_bfloat16 (bfloat16 compute, float32 weights)", {},
                 "bfloat16"),
    "onednn-off": ("TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's own kernels instead of oneDNN's)",
                   {"TF_ENABLE_ONEDNN_OPTS": "0"}, ""),
    "threads-1-inter": ("one op at a time (inter-op threads 1), kernels on all cores", {},
                        "inter_1"),
    "threads-1-intra": ("each kernel on one core (intra-op threads 1), two ops at once", {},
                        "intra_1"),
    "xla": ("jit_compile=True (XLA on the CPU)", {}, "xla"),
    "steps-per-execution-32": ("steps_per_execution=32 (fewer returns to Python)", {},
                               "steps_32"),
}
ONLY = ""         # comma-separated lever names to time (the baseline always runs); all if empty
REPEATS = 2       # times each lever runs (interleaved with baselines)
ROUNDS = 6        # timed rounds per measure in each run; the fastest counts
STEPS = 64        # training steps per round (a multiple of 32, for steps_per_execution)
CHILD = ""        # (internal) the lever this process times, for the parent
OUTPUT = "bench/results/speed-levers.md"  # Markdown copy of the table


@functools.cache
def fused_adam():
    """Keras's Adam, with each weight's update done by TensorFlow's fused kernel
    (ResourceApplyAdam): one pass over the weight and its two slots instead of several
    element-wise passes; the same maths and the same slot variables."""

    class FusedAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
                return super().update_step(gradient, variable, learning_rate)
            dtype = variable.dtype
            index = self._get_variable_index(variable)
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=self._momentums[index].handle,
                v=self._velocities[index].handle, beta1_power=beta_1 ** step,
                beta2_power=beta_2 ** step, lr=tf.cast(learning_rate, dtype), beta1=beta_1,
                beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
                grad=tf.cast(gradient, dtype))

    return FusedAdam


def space_to_depth_network(num_classes):
    """model.py's network with the first convolution (5x5, stride 2, 'same') computed on 2x2
    pixel blocks: each output sees 3x3 blocks, which cover its 5x5 window (and a row and
    column more, whose weights would be zero for the same function)."""
    layers = keras.layers
    inputs = keras.Input((56, 56, 1))
    x = layers.Lambda(lambda images: tf.nn.space_to_depth(images, 2))(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(layers.Conv2D(64, 3, padding="same", activation="relu")(
        layers.MaxPooling2D(2)(x)))
    x = layers.Dropout(0.4)(layers.Flatten()(x))
    x = layers.Dropout(0.4)(layers.Dense(512, activation="relu")(x))
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))


def time_lever(change, settings):
    """{measure: ms per step} for this process's lever."""
    if change == "inter_1":
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if change == "intra_1":
        tf.config.threading.set_intra_op_parallelism_threads(1)
    start_tensorflow()
    recipe, _ = train.resolve(train.defaults(
        precision="mixed_bfloat16" if change == "bfloat16" else model_config.PRECISION), 18_082)
    network = training.new_model(
        recipe, build_network=space_to_depth_network if change == "space_to_depth" else None)
    if change in ("fused_adam", "xla", "steps_32"):
        network.compile(optimizer=fused_adam()(recipe.learning_rate) if change == "fused_adam"
                        else keras.optimizers.Adam(recipe.learning_rate),
                        loss=network.loss, metrics=["accuracy"],
                        jit_compile=change == "xla",
                        steps_per_execution=32 if change == "steps_32" else 1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, (4096, 3136)).astype("uint8")
    y = rng.integers(0, 36, 4096)
    cached = tf.data.Dataset.from_tensors(
        (tf.constant(x[:64].reshape(-1, 56, 56, 1), tf.float32), tf.one_hot(y[:64], 36))).repeat()
    augmented = train.make_training_dataset(x, y, recipe, 0, 1000)
    result = {}
    for measure, dataset in (("cached batch", cached), ("augmented pipeline", augmented)):
        network.fit(dataset, steps_per_epoch=settings.steps, epochs=1, verbose=0)  # traces
        rounds = []
        for _ in range(settings.rounds):
            started = time.perf_counter()
            network.fit(dataset, steps_per_epoch=settings.steps, epochs=1, verbose=0)
            rounds.append((time.perf_counter() - started) / settings.steps * 1000)
        result[measure] = min(rounds)
    return result


def main(argv=None):
    settings = configure(globals(), argv=argv)
    if settings.child:
        print(json.dumps(time_lever(LEVERS[settings.child][2], settings)))
        return
    chosen = [name for name in settings.only.split(",") if name] or list(LEVERS)[1:]
    unknown = [name for name in chosen if name not in LEVERS]
    if unknown:
        raise UserError(f"--only: no lever {', '.join(unknown)}; the levers: {', '.join(LEVERS)}")
    order = ["baseline"]
    for _ in range(settings.repeats):
        for name in chosen:
            order += [name, "baseline"]
    times, ratios = {}, {}
    for position, name in enumerate(order):
        command = [sys.executable, os.path.abspath(__file__), f"--child={name}",
                   f"--rounds={settings.rounds}", f"--steps={settings.steps}"]
        done = subprocess.run(command, env={**os.environ, **LEVERS[name][1]},
                              capture_output=True, text=True)
        if done.returncode:
            raise UserError(f"lever {name} failed: {done.stderr.strip().splitlines()[-1]}")
        times.setdefault(name, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{name:<24} " + "  ".join(f"{k} {v:6.2f} ms" for k, v in times[name][-1].items()),
              flush=True)
        if name == "baseline" and position > 1:  # a lever between two baselines: its ratio
            before, lever = times["baseline"][-2], times[order[position - 1]][-1]
            ratios.setdefault(order[position - 1], []).append(
                {m: 2 * lever[m] / (before[m] + times["baseline"][-1][m]) for m in lever})
    measures = list(times["baseline"][0])

    def best(name, measure):
        return min(run[measure] for run in times[name])

    def ratio(name, measure):  # the median over its runs of the ratio to its two neighbours
        found = sorted(run[measure] for run in ratios.get(name, [{measure: 1.0}]))
        return (found[(len(found) - 1) // 2] + found[len(found) // 2]) / 2
    lines = [f"`python bench/speed_levers.py {' '.join(sys.argv[1:])}`".replace(" `", "`"), "",
             f"{time.strftime('%Y-%m-%d')}, {machine()}; ms per training step of 64 images, "
             f"fastest of {settings.rounds} rounds of {settings.steps} steps, "
             f"{settings.repeats} runs per lever, the fastest run; x baseline: the lever's "
             f"time over the mean of the baseline runs just before and after it, the median "
             f"over its runs (the machine's speed drifts: each baseline run, in order: "
             + ", ".join(f"{measure} " + "/".join(f"{run[measure]:.2f}" for run in
                                                   times["baseline"]) for measure in measures)
             + ")", "",
             "| lever | what changes | " + " | ".join(f"{m} (ms) | x baseline" for m in measures)
             + " |", "|---|---|" + "---:|---:|" * len(measures)]
    for name in ["baseline", *chosen]:
        cells = " | ".join(f"{best(name, m):.2f} | {ratio(name, m):.2f}x" for m in measures)
        lines.append(f"| {name} | {LEVERS[name][0]} | {cells} |")
    output = os.path.join(ROOT, settings.output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    write_text_atomic(output, "\n".join(lines) + "\n")
    print("\n".join(lines[4:]) + f"\n\nwrote {output}")


if __name__ == "__main__":
    run(main)
