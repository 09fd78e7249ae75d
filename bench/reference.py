"""The reference recipe: the old TF1 project's network and training loop, redone in Keras 3.

One definition, used by bench/accuracy.py (how accurate) and bench/speed.py (how fast): three
3x3 convolutions of 32, 32 and 64 filters ('same' padding, each followed by 2x2 max-pooling,
then ReLU), dense 128 ReLU, dense output; truncated-normal weights (stddev 0.05) and biases of
0.05; Adam 1e-4; batches of 32 in one fixed order; 16,000 steps; the last weights kept. Its
augmentation is imgaug on every batch in a plain Python loop, as the old script did.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from augment import augment_batch  # noqa: E402
from common import lazy_import  # noqa: E402

keras = lazy_import("keras")  # loaded on first use
layers = lazy_import("keras.layers")

FILTERS = (32, 32, 64)
DENSE_UNITS = 128
INIT_STDDEV = 0.05
BIAS = 0.05
LEARNING_RATE = 1e-4
BATCH_SIZE = 32
STEPS = 16_000
AUGMENT_RANGES = {"crop_px": 5, "scale": 0.2, "rotate": 25,  # the old imgaug pipeline
                  "keep_aspect": False}


def build_reference_model(num_classes=36):
    weights = keras.initializers.TruncatedNormal(stddev=INIT_STDDEV)
    biases = keras.initializers.Constant(BIAS)
    inputs = keras.Input(shape=(56, 56, 1))
    x = inputs
    for filters in FILTERS:
        x = layers.Conv2D(filters, 3, padding="same", kernel_initializer=weights,
                          bias_initializer=biases)(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.ReLU()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(DENSE_UNITS, activation="relu", kernel_initializer=weights,
                     bias_initializer=biases)(x)
    logits = layers.Dense(num_classes, kernel_initializer=weights, bias_initializer=biases)(x)
    model = keras.Model(inputs, logits, name="reference")
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def augment_pass(images, seed):
    """imgaug on every batch of one pass, one Python call per batch: the reference's way."""
    return np.concatenate([augment_batch(images[i:i + BATCH_SIZE], seed + i, **AUGMENT_RANGES)
                           for i in range(0, len(images), BATCH_SIZE)])


def train_reference(x, y, seed, steps=STEPS, augment=False, verbose=0):
    """Trains the reference on N x 3136 images for `steps` batches; returns (model, epochs)."""
    keras.utils.set_random_seed(seed)
    model = build_reference_model()
    order = np.random.default_rng(seed).permutation(len(x))  # one fixed order, never reshuffled
    images, labels = x[order].reshape(-1, 56, 56, 1), y[order]
    per_pass = len(images) // BATCH_SIZE
    done = 0
    while done < steps:
        n = min(per_pass, steps - done) * BATCH_SIZE
        batch_images = augment_pass(images[:n], seed * 1_000_003 + done) if augment \
            else images[:n]
        model.fit(batch_images.astype(np.float32), labels[:n], batch_size=BATCH_SIZE,
                  shuffle=False, epochs=1, verbose=verbose)
        done += n // BATCH_SIZE
    return model, steps * BATCH_SIZE / len(images)


def plain_epoch(model, x, y, batch_size, augment, seed):
    """One epoch the reference project's way: numpy arrays into model.fit, after imgaug has
    augmented each batch in a Python loop (the same ranges as the reference)."""
    images = x.reshape(-1, 56, 56, 1)
    if augment:
        images = np.concatenate([
            augment_batch(images[i:i + batch_size], seed + i, **AUGMENT_RANGES)
            for i in range(0, len(images), batch_size)])
    model.fit(images.astype(np.float32), y, batch_size=batch_size, epochs=1, shuffle=True,
              verbose=0)
