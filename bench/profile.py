"""Where a training step goes: each layer's forward and backward pass, the optimiser update,
the input pipeline and what Keras adds per step, timed apart on this machine.

    python bench/profile.py                 # batch 64, train.py's model and pipeline
    python bench/profile.py --batch_size=256

Every part runs as its own traced TensorFlow function on one batch already in memory, the
median of --repeats calls after a warm-up: a layer's forward pass on its real input; its
backward pass (gradients to its input and weights, given an upstream gradient) as the time of
forward and backward together less the forward; the optimiser's update of all the weights
from given gradients. Each part's time is less the cost of calling a traced function, measured
apart. The whole step is Keras's own (model.fit on that one cached batch): it can take less than
the parts added up, as inside one step TensorFlow runs independent ops on several cores at once
and fuses some of them; the shares say where the work is, not how the step overlaps it. The input pipeline is
train.py's, augmentation on, drawn alone. Beside each layer: its FLOPs and the rate it reaches
against this machine's float32 matmul peak (bench/speed.py's measure).
"""
import dataclasses
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
_FIXED = ("ROOT", "TRAIN_IMAGES")  # not settings: where the repo is, and a fact
from common import configure, lazy_import, run, write_text_atomic  # noqa: E402
import training  # noqa: E402
import train  # noqa: E402
from bench.accuracy import machine  # noqa: E402
from bench.speed import peak_flops  # noqa: E402

keras = lazy_import("keras")  # loaded on first use: --help answers at once
tf = lazy_import("tensorflow")

BATCH_SIZE = 64            # images per step, as train.py's default
TRAIN_IMAGES = 18_082      # the real data's training split: its size-rule settings are used
REPEATS = 50               # timed calls of each part (the median counts), after a warm-up
PIPELINE_STEPS = 200       # batches drawn from the input pipeline to time it
OUTPUT = "bench/results/profile.md"  # Markdown copy of the breakdown


def median_seconds(function, repeats):
    """Median wall time of `function()` (which returns tensors), after 3 warm-up calls."""
    for _ in range(3):
        tf.nest.map_structure(lambda t: t.numpy(), function())
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), function())
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def layer_flops(layer):
    """Multiply-adds x 2 of one forward pass of a conv or dense layer, per image."""
    if isinstance(layer, keras.layers.Conv2D):
        _, height, width, channels = layer.output.shape
        return 2 * height * width * channels * int(np.prod(layer.kernel.shape[:3]))
    if isinstance(layer, keras.layers.Dense):
        return 2 * int(np.prod(layer.kernel.shape))
    return 0


def call_seconds(repeats):
    """What calling a traced function costs by itself: taken off each part's time."""
    return median_seconds(tf.function(lambda: tf.constant(0)), repeats)


def layer_times(model, images, repeats, call):
    """[(layer, forward s, backward s)] for the layers that compute (conv, pool, dense, ...);
    `call`, the cost of a call, is taken off the forward time."""
    rows, x = [], images
    for layer in model.layers[1:]:  # after the input layer
        inputs = tf.constant(x)
        forward = tf.function(lambda: layer(inputs, training=True))
        output = forward()
        upstream = tf.ones_like(output)

        def forward_and_backward(layer=layer, inputs=inputs, upstream=upstream):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                result = layer(inputs, training=True)
            return tape.gradient(result, [inputs, *layer.trainable_variables],
                                 output_gradients=upstream)
        both = tf.function(forward_and_backward)
        if not isinstance(layer, keras.layers.Flatten):  # a reshape: nothing to time
            seconds_forward = median_seconds(forward, repeats)
            seconds_both = median_seconds(both, repeats)
            rows.append((layer, max(seconds_forward - call, 0.0),
                         max(seconds_both - seconds_forward, 0.0)))
        x = output.numpy()
    return rows


def optimizer_seconds(model, repeats, call):
    """One update of every weight from given gradients, as Adam does it in a step (less the
    cost of a call)."""
    variables = model.trainable_variables
    gradients = [tf.random.normal(v.shape) * 1e-3 for v in variables]
    optimizer = model.optimizer
    optimizer.build(variables)

    @tf.function
    def apply():
        optimizer.apply(gradients, variables)
        return tf.constant(0)
    return max(median_seconds(apply, repeats) - call, 0.0)


def keras_step_seconds(model, images, labels, steps):
    """Seconds per step of model.fit on one cached batch (no input pipeline)."""
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model.fit(dataset, steps_per_epoch=10, epochs=1, verbose=0)  # traces
    started = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - started) / steps


def pipeline_seconds(recipe, steps):
    """Seconds per batch of train.py's input pipeline alone, augmentation on."""
    rng = np.random.default_rng(0)
    count = steps * recipe.batch_size
    x = (rng.random((count, 3136)) < 0.15).astype(np.uint8)
    y = rng.integers(0, 36, count)
    batches = iter(train.make_training_dataset(x, y, recipe, 0, 1))
    next(batches)  # the first batch also starts the pipeline's threads
    started = time.perf_counter()
    for _ in range(steps - 1):
        next(batches)
    return (time.perf_counter() - started) / (steps - 1)


def main(argv=None):
    settings = configure(globals(), argv=argv)
    recipe, _ = train.resolve(train.defaults(batch_size=settings.batch_size), TRAIN_IMAGES)
    recipe = dataclasses.replace(recipe, augment_epochs=0)  # augmented, as the first epochs are
    keras.utils.set_random_seed(0)
    model = training.new_model(recipe)
    rng = np.random.default_rng(0)
    images = tf.constant((rng.random((settings.batch_size, 56, 56, 1)) < 0.15).astype(np.float32))
    labels = tf.one_hot(rng.integers(0, 36, settings.batch_size), 36)
    peak = peak_flops()
    print(f"batch {settings.batch_size}; {machine()}; peak {peak / 1e9:.0f} GFLOP/s", flush=True)

    call = call_seconds(settings.repeats)
    parts = []  # (name, seconds per step, FLOPs per step or 0)
    for layer, forward, backward in layer_times(model, images, settings.repeats, call):
        flops = layer_flops(layer) * settings.batch_size
        parts.append((f"{layer.name} forward", forward, flops))
        parts.append((f"{layer.name} backward", backward, 2 * flops))
    parts.append(("optimiser update (Adam, all weights)",
                  optimizer_seconds(model, settings.repeats, call), 0))
    step = keras_step_seconds(model, images, labels, max(4 * settings.repeats, 20))
    pipeline = pipeline_seconds(recipe, settings.pipeline_steps)
    counted = sum(seconds for _, seconds, _ in parts)
    flops = sum(f for _, _, f in parts)

    lines = [f"`python bench/profile.py {' '.join(sys.argv[1:])}`".replace(" `", "`"), "",
             f"{time.strftime('%Y-%m-%d')}, {machine()}; batch {settings.batch_size}; "
             f"float32 matmul peak {peak / 1e9:.0f} GFLOP/s; a traced call costs "
             f"{1e3 * call:.3f} ms, taken off each part", "",
             "| part of a training step, timed alone | ms | share of the parts | "
             "GFLOP/s (of peak) |", "|---|---|---|---|"]
    for name, seconds, part_flops in parts:
        rate = f"{part_flops / seconds / 1e9:.0f} ({part_flops / seconds / peak:.0%})" \
            if part_flops and seconds else "-"
        lines.append(f"| {name} | {1e3 * seconds:.3f} | {seconds / counted:.1%} | {rate} |")
    lines += [f"| **the parts, added up** | **{1e3 * counted:.3f}** | 100% | "
              f"{flops / counted / 1e9:.0f} ({flops / counted / peak:.0%}) |",
              f"| **the whole step: model.fit on one cached batch** | **{1e3 * step:.3f}** | "
              f"{step / counted:.0%} | {flops / step / 1e9:.0f} ({flops / step / peak:.0%}) |",
              f"| the input pipeline alone, augmentation on (it runs beside the step) | "
              f"{1e3 * pipeline:.3f} | {pipeline / counted:.1%} | - |"]
    markdown = "\n".join(lines)
    print(markdown)
    output = os.path.join(ROOT, settings.output)
    write_text_atomic(output, markdown + "\n")
    print(f"\nwrote {output}")


if __name__ == "__main__":
    run(main)
