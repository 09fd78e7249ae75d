"""The classifier: two convolution blocks and a dense head; and its teacher, a deeper network
that train.py can distil into it. Only builds models; no I/O.

    python model.py                  # prints the summary and parameter count
    python model.py --dense_units=256
    python model.py --network=teacher
"""
from common import UserError, configure, lazy_import, pick, run, start_tensorflow
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
TEACHER_WIDTHS = "32p,64,64p,128,128p"  # the teacher's 3x3 convolutions after the first: filters
                      # each, p: 2x2 max pooling after it (batch-normalised, 5x the compute)
PRECISION = "float32" # float32, or mixed_bfloat16: compute in bfloat16 with float32 weights
                      # (faster where the CPU has bfloat16 instructions: AVX512_BF16, AMX)
NETWORK = "classifier"  # the network: classifier, or teacher (a stronger one to distil from)
_RANGES = {"FILTERS_1": "[1, inf)", "KERNEL_1": "[1, inf)", "STRIDE_1": "[1, inf)",
           "FILTERS_2": "[1, inf)", "KERNEL_2": "[1, inf)", "DENSE_UNITS": "[1, inf)",
           "DROPOUT": "[0, 1)", "PRECISION": ("float32", "mixed_bfloat16"),
           "NETWORK": ("classifier", "teacher")}  # check_values

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
    return keras.Model(inputs, head(x, num_classes), name="two_conv_classifier")


def head(x, num_classes):
    """The class scores ("logits": a teacher's are distilled, a temperature divides them) and
    their softmax, in float32 whatever the precision: the loss needs the small values."""
    logits = layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return layers.Activation("softmax", name="probabilities", dtype="float32")(logits)


def parse_widths(text):
    """[(filters, pool after)] of a TEACHER_WIDTHS text such as "32p,64,64p"."""
    convolutions = []
    for word in text.split(","):
        filters = word.strip().removesuffix("p")
        if not filters.isdigit() or int(filters) < 1:
            raise UserError(f"--teacher_widths={text}: expected filter counts such as "
                             f"32,32p,64p (p: pool after that convolution)")
        convolutions.append((int(filters), word.strip().endswith("p")))
    return convolutions


def build_teacher(num_classes=data_format.NUM_CLASSES, teacher_widths=TEACHER_WIDTHS,
                  dense_units=DENSE_UNITS, dropout=DROPOUT, precision=PRECISION, **_):
    """A stronger network to learn from: the classifier's first convolution (5x5, stride 2),
    then the 3x3 convolutions of `teacher_widths`, each batch-normalised before its ReLU, and
    the classifier's head (dropout, dense, dropout). The classifier's own sizes (the other
    keyword arguments) do not apply to it."""
    inputs = keras.Input(shape=data_format.IMAGE_SHAPE, name="image")
    x = layers.Conv2D(32, 5, strides=2, padding="same", use_bias=False, dtype=precision)(inputs)
    for filters, pool in parse_widths(teacher_widths):
        x = layers.Activation("relu", dtype=precision)(
            layers.BatchNormalization(dtype=precision)(x))
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, dtype=precision)(x)
        if pool:
            x = layers.MaxPooling2D(2, dtype=precision)(x)
    x = layers.Activation("relu", dtype=precision)(layers.BatchNormalization(dtype=precision)(x))
    x = layers.Dropout(dropout, dtype=precision)(layers.Flatten(dtype=precision)(x))
    x = layers.Dense(dense_units, activation="relu", dtype=precision)(x)
    x = layers.Dropout(dropout, dtype=precision)(x)
    return keras.Model(inputs, head(x, num_classes), name="teacher")


def build(num_classes=data_format.NUM_CLASSES, network=NETWORK, teacher_widths=TEACHER_WIDTHS,
          **sizes):
    """The network named `network` ("classifier" or "teacher") with these sizes: any of this
    file's settings, as pick(settings, vars(model)) gives them; each network takes its own."""
    if network == "teacher":
        return build_teacher(num_classes, teacher_widths, **sizes)
    return build_model(num_classes, **sizes)


def main(argv=None):
    settings = configure(globals(), argv=argv)
    parse_widths(settings.teacher_widths)  # a mistake answers before TensorFlow loads
    start_tensorflow()
    model = build(**pick(settings, globals()))
    model.summary()
    print(f"computes in {model.layers[1].compute_dtype}, weights in {model.layers[1].kernel.dtype}")
    print(f"parameters: {model.count_params():,}")


if __name__ == "__main__":
    run(main)
