"""The classifier: two convolution blocks and a dense head. Only builds models; no I/O.

    python model.py        # prints the summary and parameter count
"""
from common import configure, quiet_native_stderr, run
with quiet_native_stderr():  # TensorFlow's C++ start-up lines, shown only if it fails
    import keras
    from keras import layers
import prepare_data  # noqa: E402  (the data format: 56x56 images, 36 classes)

FILTERS_1 = 32        # first convolution: stroke pieces
KERNEL_1 = 5          # its kernel size: a 5x5 window sees a stroke's direction
STRIDE_1 = 2          # 2 halves the resolution at the first layer: ~4x less compute after it
FILTERS_2 = 64        # second convolution: parts of characters
KERNEL_2 = 3          # its kernel size (after the first pooling, 3x3 covers 12x12 pixels)
DENSE_UNITS = 512     # the head that combines parts into characters (128, 256 lost; see bench/)
DROPOUT = 0.4         # before the dense and the output layers: the main regulariser


def build_model(num_classes=prepare_data.NUM_CLASSES):
    """conv-pool-conv-pool-dense-softmax; takes SIDE x SIDE x 1 images with pixels 0/1.
    Sizes come from the constants above, read at call time so that overrides apply."""
    side = prepare_data.SIDE
    inputs = keras.Input(shape=(side, side, 1), name="image")
    x = inputs
    for filters, kernel, stride in ((FILTERS_1, KERNEL_1, STRIDE_1), (FILTERS_2, KERNEL_2, 1)):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(DROPOUT)(x)
    x = layers.Dense(DENSE_UNITS, activation="relu")(x)
    x = layers.Dropout(DROPOUT)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="two_conv_classifier")


def main():
    configure(globals())
    model = build_model()
    model.summary()
    print(f"parameters: {model.count_params():,}")


if __name__ == "__main__":
    run(main)
