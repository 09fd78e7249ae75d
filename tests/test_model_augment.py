"""model.py builds the right network; augment.py keeps images binary and labels untouched."""
import numpy as np

import augment
import model
import train
from conftest import make_dataset


def test_model_outputs_a_distribution_over_36_classes():
    net = model.build_model()
    x, _ = make_dataset(per_class=1)
    probabilities = net.predict(x.reshape(-1, 56, 56, 1).astype(np.float32), verbose=0)
    assert probabilities.shape == (36, 36)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities >= 0).all()
    assert sum("conv" in layer.name for layer in net.layers) == 2


def test_model_sizes_follow_the_constants(monkeypatch):
    small = model.build_model().count_params()
    monkeypatch.setattr(model, "DENSE_UNITS", model.DENSE_UNITS * 2)
    assert model.build_model().count_params() > small


def test_augment_keeps_shape_dtype_and_binarity():
    x, _ = make_dataset(per_class=2)
    for shaped in (x, x.reshape(-1, 56, 56), x.reshape(-1, 56, 56, 1)):
        out = augment.augment_batch(shaped, seed=1)
        assert out.shape == shaped.shape and out.dtype == shaped.dtype
        assert set(np.unique(out)) <= {0, 1}
    out = augment.augment_batch(x, seed=1)
    assert not np.array_equal(out, x)  # it does change the images
    np.testing.assert_array_equal(out, augment.augment_batch(x, seed=1))  # reproducible
    assert abs(out.mean() - x.mean()) < 0.5 * x.mean()  # strokes neither vanish nor flood


def test_augmented_pipeline_keeps_labels_with_their_images():
    # even labels: a block at the left edge; odd labels: at the right edge. Crop, scale and
    # rotation move a block a little but never across the middle, so the side tells the label.
    y = np.arange(64) % 36
    x = np.zeros((64, 56, 56), np.uint8)
    for i, label in enumerate(y):
        left = 3 if label % 2 == 0 else 45
        x[i, 24:32, left:left + 8] = 1
    dataset = train.make_dataset(x.reshape(64, -1), y, batch_size=16, training=True,
                                 augment=True, seed=3)
    seen_y = []
    for images, labels in dataset:
        assert images.dtype.name == "float32" and images.shape[1:] == (56, 56, 1)
        for image, label in zip(images.numpy(), labels.numpy()):
            column = np.argwhere(image[..., 0] > 0)[:, 1].mean()
            assert (column < 28) == (label % 2 == 0), (label, column)
            seen_y.append(int(label))
    assert sorted(seen_y) == sorted(y.tolist())


def test_tensorflow_augmentation_matches_the_contract():
    import tensorflow as tf
    x, _ = make_dataset(per_class=2)
    images = x.reshape(-1, 56, 56, 1)
    out = augment.augment_batch_tf(tf.constant(images), tf.constant([1, 2])).numpy()
    assert out.shape == images.shape and out.dtype == images.dtype
    assert set(np.unique(out)) <= {0, 1} and not np.array_equal(out, images)
    again = augment.augment_batch_tf(tf.constant(images), tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(out, again)  # a seed fixes the draw
    identity = augment.augment_batch_tf(tf.constant(images), tf.constant([1, 2]), crop_px=0,
                                        scale=0.0, rotate=0).numpy()
    np.testing.assert_array_equal(identity, images)


def test_tensorflow_augmentation_geometry():
    import tensorflow as tf
    # a bar along the top edge: a 90-degree rotation about the centre puts it on a side edge
    image = np.zeros((1, 56, 56, 1), np.uint8)
    image[0, 2:8, 10:46] = 1
    turned = augment.augment_batch_tf(tf.constant(image), tf.constant([0, 0]), crop_px=0,
                                      scale=0.0, rotate=90).numpy()[0, ..., 0]
    # rotate=90 draws an angle in [-90, 90]; whatever the draw, the bar keeps its length
    assert abs(int(turned.sum()) - int(image.sum())) < 0.15 * image.sum()
    # with every range at zero the transform is exactly the identity matrix
    transforms = augment.random_transforms(1, tf.constant([3, 4]), 56.0, 0, 0.0, 0)
    np.testing.assert_allclose(transforms.numpy()[0], [1, 0, 0, 0, 1, 0, 0, 0], atol=1e-6)


def test_reframing_fills_the_frame_like_the_data():
    import tensorflow as tf
    import prepare_data
    rng = np.random.default_rng(0)
    framed = np.stack([prepare_data.frame_character(rng.random((20, 12)) > 0.6)
                       for _ in range(8)])[..., None]
    # an image framed like the data is left exactly as it is
    transforms = augment.reframing_transforms(tf.constant(framed, tf.float32))
    np.testing.assert_array_equal(augment._warp(tf.constant(framed, tf.float32),
                                                transforms).numpy() >= 0.5, framed > 0)
    # after a random warp and reframing, the longer side of the ink spans the frame again
    out = augment.augment_batch_tf(tf.constant(framed), tf.constant([5, 6]), reframe=True,
                                   keep_aspect=True).numpy()[..., 0]
    for image in out:
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) >= 52
        assert min(rows[0], cols[0]) <= 1


def test_keep_aspect_in_both_back_ends():
    import tensorflow as tf
    transforms = augment.random_transforms(64, tf.constant([1, 1]), 56.0, 5, 0.2, 0,
                                           keep_aspect=True).numpy()
    np.testing.assert_allclose(transforms[:, 0], transforms[:, 4], rtol=1e-6)  # same zoom on x, y
    x, _ = make_dataset(per_class=1)
    out = augment.augment_batch(x, seed=2, keep_aspect=True)
    assert out.shape == x.shape and set(np.unique(out)) <= {0, 1}
