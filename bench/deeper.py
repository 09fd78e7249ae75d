"""What the two-convolution limit costs: train.py's whole recipe with a deeper network.

    python bench/deeper.py --data=../shared/data/letters26-dev.npz --seed=1 --out_dir=out-deeper
    python evaluate.py --checkpoint=out-deeper/best.keras --split=val

A probe, not a product: everything but the network is train.py's (split, augmentation, the
size rule, schedule, early stopping, checkpoints, resuming), so its validation accuracy
compares directly with a `python train.py` run of the same data and seed. The network: the
classifier's first convolution (32 filters, 5x5, stride 2), then the 3x3 convolutions of WIDTHS,
each batch-normalised before its ReLU, then the classifier's head (dropout, dense, dropout).
If even this network gains little, the errors left lie in the data, not in the model's size.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
_FIXED = ("ROOT",)  # not a setting: where the repo is
from common import UserError, configure, lazy_import, run  # noqa: E402
import augment  # noqa: E402
import data_format  # noqa: E402
import model  # noqa: E402
import train  # noqa: E402
from bench.speed import training_flops_per_image  # noqa: E402  (the count speed.py reports)

keras = lazy_import("keras")  # loaded on first use: --help answers at once
layers = lazy_import("keras.layers")

WIDTHS = "32p,64,64p,128,128p"  # the 3x3 convolutions after the first: filters each,
                                 # p: 2x2 max pooling after it
DENSE_UNITS = 512                # the head's dense layer
DROPOUT = 0.4                    # before the head's dense and output layers


def parse_widths(text):
    """[(filters, pool after)] from WIDTHS."""
    convolutions = []
    for word in text.split(","):
        filters = word.strip().removesuffix("p")
        if not filters.isdigit() or int(filters) < 1:
            raise UserError(f"--widths={text}: expected filter counts such as 32,32p,64p "
                            f"(p: pool after that convolution)")
        convolutions.append((int(filters), word.strip().endswith("p")))
    return convolutions


def deeper_model(num_classes, widths=WIDTHS, dense_units=DENSE_UNITS, dropout=DROPOUT):
    inputs = keras.Input(shape=data_format.IMAGE_SHAPE, name="image")
    x = layers.Conv2D(32, 5, strides=2, padding="same", use_bias=False)(inputs)
    for filters, pool in parse_widths(widths):
        x = layers.Activation("relu")(layers.BatchNormalization()(x))
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        if pool:
            x = layers.MaxPooling2D(2)(x)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = layers.Dropout(dropout)(layers.Flatten()(x))
    x = layers.Dense(dense_units, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="deeper_probe")


def main(argv=None):
    # train.py's settings and these, but not model.py's sizes: this network replaces them,
    # and the run's record holds its settings in their place
    settings = configure(globals(), vars(train), vars(augment), argv=argv, positional="DATA")
    parse_widths(settings.widths)  # a bad --widths fails now, before any data is read

    def network(num_classes):
        return deeper_model(num_classes, settings.widths, settings.dense_units, settings.dropout)
    ours, deeper = (training_flops_per_image(build(data_format.NUM_CLASSES))
                    for build in (model.build_model, network))
    print(f"training FLOPs per image: {deeper / 1e6:.0f} million for this network, "
          f"{ours / 1e6:.0f} million for the classifier ({deeper / ours:.1f}x)", flush=True)
    train.run_training(settings, build_network=network)


if __name__ == "__main__":
    run(main)
