"""model.py builds the right network; augment.py keeps images binary and labels untouched;
train.py's input pipeline draws every epoch from (seed, epoch) alone."""
import numpy as np
import pytest
import tensorflow as tf

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


def test_model_sizes_follow_its_arguments(monkeypatch, capsys):
    def shapes(**sizes):
        return [tuple(w.shape) for w in model.build_model(**sizes).weights]
    base = shapes()
    assert base[0] == (model.KERNEL_1, model.KERNEL_1, 1, model.FILTERS_1)
    sizes = {}
    for name, value in (("filters_1", 8), ("kernel_1", 3), ("filters_2", 16), ("kernel_2", 5),
                        ("dense_units", 64)):
        sizes[name] = value
        assert shapes(**sizes) != base, name
        base = shapes(**sizes)
    # full resolution: 4x the dense layer's inputs
    assert shapes(**sizes, stride_1=1)[-4][0] == 4 * base[-4][0]
    assert [layer.rate for layer in model.build_model(dropout=0.25).layers
            if isinstance(layer, model.layers.Dropout)] == [0.25, 0.25]
    mixed = model.build_model(precision="mixed_bfloat16")
    assert [layer.compute_dtype for layer in mixed.layers[1:-2]] == ["bfloat16"] * 8
    assert {w.dtype for w in mixed.weights} == {"float32"}
    assert [layer.compute_dtype for layer in mixed.layers[-2:]] == ["float32"] * 2  # logits, probabilities
    assert {layer.compute_dtype for layer in model.build_model().layers} == {"float32"}
    # python model.py --dense_units 64: the summary of that model
    monkeypatch.setattr("sys.argv", ["model.py", "--dense_units", "64", "--filters_1=8"])
    model.main()
    count = model.build_model(dense_units=64, filters_1=8).count_params()
    assert capsys.readouterr().out.strip().endswith(f"parameters: {count:,}")
    monkeypatch.setattr("sys.argv", ["model.py", "--precision=mixed_bfloat16"])
    model.main()
    assert "computes in bfloat16, weights in float32" in capsys.readouterr().out


def test_imgaug_keeps_shape_dtype_and_binarity():
    x, _ = make_dataset(per_class=2)
    for shaped in (x, x.reshape(-1, 56, 56), x.reshape(-1, 56, 56, 1)):
        out = augment.augment_batch(shaped, seed=1)
        assert out.shape == shaped.shape and out.dtype == shaped.dtype
        assert set(np.unique(out)) <= {0, 1}
    out = augment.augment_batch(x, seed=1)
    assert not np.array_equal(out, x)  # it does change the images
    np.testing.assert_array_equal(out, augment.augment_batch(x, seed=1))  # reproducible
    assert abs(out.mean() - x.mean()) < 0.5 * x.mean()  # strokes neither vanish nor flood


def test_tensorflow_augmentation_matches_the_contract():
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


def orientation(image):
    """Angle in degrees of the ink's main axis (0 = horizontal), from second moments."""
    rows, cols = np.nonzero(image)
    rows, cols = rows - rows.mean(), cols - cols.mean()
    return np.degrees(0.5 * np.arctan2(2 * np.mean(rows * cols),
                                       np.mean(cols ** 2) - np.mean(rows ** 2)))


def test_rotation_turns_images_within_its_range():
    bars = np.zeros((32, 56, 56, 1), np.uint8)
    bars[:, 26:30, 8:48] = 1  # a horizontal bar through the centre
    turned = augment.augment_batch_tf(tf.constant(bars), tf.constant([7, 7]), crop_px=0,
                                      scale=0.0, rotate=30).numpy()[..., 0]
    angles = np.array([orientation(image) for image in turned])
    assert np.all(np.abs(angles) <= 32), angles
    assert np.max(np.abs(angles)) > 15 and np.std(angles) > 5, angles  # really turned
    # each bar keeps its length: a rotation, not a squash
    lengths = turned.sum(axis=(1, 2)).astype(int)
    assert np.all(np.abs(lengths - int(bars[0].sum())) < 0.15 * bars[0].sum()), lengths
    # with every range at zero the transform is exactly the identity matrix
    transforms = augment.random_transforms(1, tf.constant([3, 4]), 56.0, 0, 0.0, 0)
    np.testing.assert_allclose(transforms.numpy()[0], [1, 0, 0, 0, 1, 0, 0, 0], atol=1e-6)


def aspect_ratios(images):
    ratios = []
    for image in images.reshape(-1, 56, 56):
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        ratios.append((cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1))
    return np.array(ratios)


@pytest.mark.parametrize("backend", ["tf", "imgaug"])
def test_keep_aspect_keeps_a_characters_proportions(backend):
    boxes = np.zeros((48, 56, 56), np.uint8)
    boxes[:, 18:38, 8:48] = 1  # twice as wide as tall

    def run(keep_aspect):
        ranges = dict(crop_px=4, scale=0.25, rotate=0, keep_aspect=keep_aspect)
        if backend == "tf":
            return augment.augment_batch_tf(tf.constant(boxes[..., None]), tf.constant([2, 3]),
                                            **ranges).numpy()
        return augment.augment_batch(boxes, seed=3, **ranges)
    kept, free = aspect_ratios(run(True)), aspect_ratios(run(False))
    assert np.all(np.abs(kept - 2) < 0.15), kept
    assert np.max(np.abs(free - 2)) > 0.3, free  # without it, the proportions do change


def test_share_leaves_the_other_images_untouched():
    x, _ = make_dataset(per_class=6)
    images = tf.constant(x.reshape(-1, 56, 56, 1))
    out = augment.augment_batch_tf(images, tf.constant([4, 5]), share=0.5).numpy()
    unchanged = np.mean([np.array_equal(a, b) for a, b in zip(out, images.numpy())])
    assert 0.3 < unchanged < 0.7, unchanged
    none = augment.augment_batch_tf(images, tf.constant([4, 5]), share=0.0).numpy()
    np.testing.assert_array_equal(none, images.numpy())
    with_imgaug = augment.augment_batch(x[:64], seed=1, share=0.0)
    np.testing.assert_array_equal(with_imgaug, x[:64])


def test_elastic_bends_without_moving_the_character_away():
    x, _ = make_dataset(per_class=2)
    images = x.reshape(-1, 56, 56, 1)
    still = {"crop_px": 0, "scale": 0.0, "rotate": 0}
    bent = augment.augment_batch_tf(tf.constant(images), tf.constant([1, 2]), elastic=2.0,
                                    **still).numpy()
    assert set(np.unique(bent)) <= {0, 1}
    changed = np.mean([not np.array_equal(a, b) for a, b in zip(bent, images)])
    assert changed > 0.9  # nearly every image bends
    moved = np.abs(bent.mean(axis=(1, 2, 3)) - images.mean(axis=(1, 2, 3)))
    assert np.all(moved < 0.5 * images.mean(axis=(1, 2, 3)))  # but keeps most of its ink
    flat = augment.augment_batch_tf(tf.constant(images), tf.constant([1, 2]), elastic=0.0,
                                    **still).numpy()
    np.testing.assert_array_equal(flat, images)


def test_stroke_makes_lines_thicker_or_thinner():
    x, _ = make_dataset(per_class=2)
    images = x.reshape(-1, 56, 56, 1)
    out = augment.augment_batch_tf(tf.constant(images), tf.constant([1, 1]), crop_px=0,
                                   scale=0.0, rotate=0, stroke=1.0).numpy()
    change = out.sum(axis=(1, 2, 3)).astype(int) - images.sum(axis=(1, 2, 3)).astype(int)
    assert np.all(change != 0)  # every image: a pixel wider or narrower strokes
    assert (change > 0).mean() > 0.25 and (change < 0).mean() > 0.25


# ---------------------------------------------------------------------------- the pipeline

def recipe(**overrides):
    """train.py's settings with these overrides, resolved for a small split (augmentation
    throughout unless --augment_epochs says otherwise)."""
    return train.resolve(train.defaults(**overrides), 100)[0]


def epochs_of(dataset, steps):
    """[(images, labels) of each epoch], the batches of an epoch joined."""
    batches = [(images.numpy(), labels.numpy().argmax(1)) for images, labels in dataset]
    return [tuple(np.concatenate(part) for part in zip(*batches[i:i + steps]))
            for i in range(0, len(batches), steps)]


def test_augmented_pipeline_keeps_labels_with_their_images():
    # even labels: a block at the left edge; odd labels: at the right edge. Crop, scale and
    # rotation move a block a little but never across the middle, so the side tells the label.
    y = np.arange(64) % 36
    x = np.zeros((64, 56, 56), np.uint8)
    for i, label in enumerate(y):
        left = 3 if label % 2 == 0 else 45
        x[i, 24:32, left:left + 8] = 1
    dataset = train.make_training_dataset(x.reshape(64, -1), y, recipe(batch_size=16, seed=3),
                                          0, 1)
    images, labels = epochs_of(dataset, 4)[0]
    assert images.dtype == np.float32 and images.shape == (64, 56, 56, 1)
    for image, label in zip(images, labels):
        column = np.argwhere(image[..., 0] > 0)[:, 1].mean()
        assert (column < 28) == (label % 2 == 0), (label, column)
    assert sorted(labels) == sorted(y.tolist())
    assert not np.array_equal(images, x.reshape(-1, 56, 56, 1))  # augmented


def test_every_epoch_comes_from_seed_and_epoch_alone():
    x, y = make_dataset(per_class=2)  # 72 images: batches of 16, 5 steps an epoch
    nine = recipe(batch_size=16, seed=9)
    whole = epochs_of(train.make_training_dataset(x, y, nine, 0, 3), 5)
    resumed = epochs_of(train.make_training_dataset(x, y, nine, 1, 3), 5)
    assert len(whole) == 3 and len(resumed) == 2
    for (a_images, a_labels), (b_images, b_labels) in zip(whole[1:], resumed):
        np.testing.assert_array_equal(a_labels, b_labels)  # same order
        np.testing.assert_array_equal(a_images, b_images)  # same augmentation draws
    assert not np.array_equal(whole[0][1], whole[1][1])  # each epoch reshuffled
    for _, labels in whole:
        assert sorted(labels) == sorted(y.tolist())  # every image once an epoch

    ten = recipe(batch_size=16, seed=10)  # another --seed, another order
    assert not np.array_equal(
        epochs_of(train.make_training_dataset(x, y, ten, 0, 1), 5)[0][1], whole[0][1])

    clean_finish = recipe(batch_size=16, seed=9, augment_epochs=2)  # clean after two epochs
    finish = epochs_of(train.make_training_dataset(x, y, clean_finish, 0, 3), 5)
    originals = {image.tobytes() for image in x.reshape(-1, 56, 56, 1).astype(np.float32)}
    clean = [[image.tobytes() in originals for image in images] for images, _ in finish]
    assert not all(clean[0]) and not all(clean[1]) and all(clean[2]), [sum(c) for c in clean]


def test_backend_setting_picks_the_implementation(monkeypatch):
    calls = []
    monkeypatch.setattr(augment, "augment_batch",
                        lambda images, seed, **ranges: (calls.append(ranges), images)[1])
    x, y = make_dataset(per_class=1)
    epochs_of(train.make_training_dataset(x, y, recipe(batch_size=16, seed=9), 0, 1), 3)
    assert calls == []  # the tf back end by default
    imgaug = recipe(batch_size=16, seed=9, backend="imgaug", rotate=7)
    epochs_of(train.make_training_dataset(x, y, imgaug, 0, 1), 3)
    assert len(calls) == 3 and calls[0]["rotate"] == 7  # one imgaug call per batch, its ranges


def test_preview_grid_shows_originals_and_their_augmented_copies(tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.chdir(tmp_path)  # python augment.py, in this process: it writes into the cwd

    def grid(*args):
        monkeypatch.setattr("sys.argv", ["augment.py", *args])
        augment.main()
        image = np.asarray(Image.open(tmp_path / "augment_grid.png"))[::2, ::2]  # 2x upscaled
        return [image[:, c * 58 + 1:c * 58 + 57] for c in range(8)]  # 8 columns of 8 images
    for identity in (("--crop_px=0", "--scale", "0", "--rotate=0"), ("--share=0",)):
        columns = grid(*identity)
        assert all(np.array_equal(column, columns[0]) for column in columns[1:]), identity
    for changed in ((), ("--backend=imgaug",)):
        columns = grid(*changed)
        assert not any(np.array_equal(column, columns[0]) for column in columns[1:]), changed
