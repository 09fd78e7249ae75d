"""The classifier: two convolution blocks and a dense head. Only builds models; no I/O.

    python model.py                  # prints the summary and parameter count
    python model.py --dense_units=256
"""
from common import configure, lazy_import, pick, run, start_tensorflow
import data_format

keras = lazy_import("keras")  # loaded on first use: --help answers at once
layers = lazy_import("keras.layers")

FILTERS_1 = 32        # filters of the first convolution (stroke pieces)
KERNEL_1 = 5          # kernel size of the first convolution: 5x5 sees a stroke's direction
STRIDE_1 = 2          # stride of the first convolution: 2 halves the resolution, ~4x less compute
FILTERS_2 = 64        # filters of the second convolution (parts of characters)
KERNEL_2 = 3          # kernel size of the second convolution (3x3 there covers 12x12 pixels)
DENSE_UNITS = 512     # units of the dense layer that combines parts into characters
DROPOUT = 0.4         # dropout before the dense and the output layers: the main regulariser
PRECISION = "float32" # float32, or mixed_bfloat16: compute in bfloat16 with float32 weights
                      # (faster where the CPU has bfloat16 instructions: AVX512_BF16, AMX)
_RANGES = {"FILTERS_1": "[1, inf)", "KERNEL_1": "[1, inf)", "STRIDE_1": "[1, inf)",
           "FILTERS_2": "[1, inf)", "KERNEL_2": "[1, inf)", "DENSE_UNITS": "[1, inf)",
           "DROPOUT": "[0, 1)", "PRECISION": ("float32", "mixed_bfloat16")}  # check_values

def build_model(num_classes=data_format.NUM_CLASSES, filters_1=FILTERS_1, kernel_1=KERNEL_1,
                stride_1=STRIDE_1, filters_2=FILTERS_2, kernel_2=KERNEL_2,
                dense_units=DENSE_UNITS, dropout=DROPOUT, precision=PRECISION):
    """conv-pool-conv-pool-dense-softmax for SIDE x SIDE x 1 images with pixels 0/1; the
    sizes default to the constants above (train.py passes its settings' values)."""
    side = data_format.SIDE
    inputs = keras.Input(shape=(side, side, 1), name="image")
    x = inputs
    for filters, kernel, stride in ((filters_1, kernel_1, stride_1), (filters_2, kernel_2, 1)):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", activation="relu",
                          dtype=precision)(x)
        x = layers.MaxPooling2D(2, dtype=precision)(x)
    x = layers.Flatten(dtype=precision)(x)
    x = layers.Dropout(dropout, dtype=precision)(x)
    x = layers.Dense(dense_units, activation="relu", dtype=precision)(x)
    x = layers.Dropout(dropout, dtype=precision)(x)
    # float32 probabilities whatever the precision: the loss needs their small values
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities",
                           dtype="float32")(x)
    return keras.Model(inputs, outputs, name="two_conv_classifier")


def main(argv=None):
    settings = configure(globals(), argv=argv)
    start_tensorflow()
    model = build_model(**pick(settings, globals()))
    model.summary()
    print(f"computes in {model.layers[1].compute_dtype}, weights in {model.layers[1].kernel.dtype}")
    print(f"parameters: {model.count_params():,}")


if __name__ == "__main__":
    run(main)
