"""The users' data format, the facts every script shares: square binary images, white strokes
(1) on black (0), flattened row by row, with integer labels. Only constants: any module may
import this one, and it imports nothing of the project's."""

SIDE = 56                           # images are SIDE x SIDE pixels
NUM_PIXELS = SIDE * SIDE            # 3136 values a row of train_x
IMAGE_SHAPE = (SIDE, SIDE, 1)       # what the network takes: one channel
NUM_CLASSES = 36                    # labels 0..35 of the users' pickle: letters and digits
                                    # (a folder, or a pickle with a PATH-labels.txt beside it,
                                    # has its own number of classes)
EMBEDDED = "embedded"               # the built-in dataset's name, in place of a path in records
