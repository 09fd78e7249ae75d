"""train.py's input pipeline, in tf.data: validation and test batches as they are, and the
training batches of any range of epochs, each epoch's order and augmentation drawn from
(--seed, epoch) alone, so that a resumed run sees what the uninterrupted one would have.
"""
from common import lazy_import, pick
import augment
import data_format

tf = lazy_import("tensorflow")  # loaded on first use: importing train.py must not load it


def make_dataset(x, y, batch_size, num_classes=data_format.NUM_CLASSES):
    """Validation or test batches: (float 56x56x1 images, one-hot labels), in order."""
    dataset = tf.data.Dataset.from_tensor_slices((x.reshape(-1, *data_format.IMAGE_SHAPE), y))
    dataset = dataset.batch(batch_size).map(
        lambda images, labels: (tf.cast(images, tf.float32),
                                tf.one_hot(labels, num_classes)))
    return dataset.cache().prefetch(tf.data.AUTOTUNE)


def make_training_dataset(x, y, settings, first_epoch, last_epoch,
                          num_classes=data_format.NUM_CLASSES):
    """Batches of epochs first_epoch..last_epoch - 1 (0-based), one after the other, of
    --batch_size images. Each epoch's order and augmentation draws come from (--seed, epoch)
    alone, so a resumed run sees exactly what the uninterrupted run would have seen; parallel
    workers cannot change them."""
    if settings.augment_epochs < 0:
        raise ValueError("--augment_epochs left at auto: resolve the settings first with "
                         "train.resolve(settings, number_of_training_images)")
    seed, augment_epochs = settings.seed, settings.augment_epochs
    ranges = pick(settings, vars(augment))
    images = tf.constant(x.reshape(-1, *data_format.IMAGE_SHAPE))
    labels = tf.constant(y)
    count = len(y)

    def one_epoch(epoch):
        order = tf.argsort(tf.random.stateless_uniform([count], seed=[seed, epoch]))
        batches = tf.data.Dataset.from_tensor_slices(order).batch(settings.batch_size)
        return tf.data.Dataset.zip(batches, tf.data.Dataset.range(1 << 30)).map(
            lambda indices, step: (indices, epoch, step))

    def load(indices, epoch, step):
        batch = tf.gather(images, indices)
        if settings.augment:
            seed_pair = tf.stack([tf.cast(seed, tf.int64), epoch * (1 << 20) + step])
            augmented = lambda: augment.augment_in_graph(batch, seed_pair, **ranges)  # noqa: E731
            if augment_epochs > 0:  # a clean finish: the later epochs see the images as they are
                batch = tf.cond(epoch < augment_epochs, augmented, lambda: batch)
            else:
                batch = augmented()
        return (tf.cast(batch, tf.float32),
                tf.one_hot(tf.gather(labels, indices), num_classes))

    dataset = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(one_epoch)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()  # several workers: each takes its share of every batch
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
