"""prepare_data.py: safe loading, validation of every kind of bad input, the split."""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import data_format
import data_sources
import prepare_data
from conftest import assert_user_error, make_dataset, run_script, write_pickle


def prepare_cli(tmp_path, path):
    return run_script("prepare_data.py", f"--input={path}", cwd=tmp_path)


class Payload:
    """A hostile pickle: loading it would create a file if its code ever ran."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "evil.pkl", (Payload(marker), np.zeros(3)))
    result = prepare_cli(tmp_path, path)
    assert_user_error(result, "refused", "system")
    assert not marker.exists()
    # and through the function used by train.py and evaluate.py
    with pytest.raises(prepare_data.UserError):
        prepare_data.prepare(path, prepared_dir=str(tmp_path / "cache"), verbose=False)
    assert not marker.exists()


def test_missing_file(tmp_path):
    assert_user_error(prepare_cli(tmp_path, tmp_path / "nope.pkl"), "not found", "nope.pkl")


def test_not_a_pickle(tmp_path):
    path = tmp_path / "text.pkl"
    path.write_text("just some text, not a pickle\n")
    assert_user_error(prepare_cli(tmp_path, path), "pickle")


def test_truncated_pickle(tmp_path):
    x, y = make_dataset(per_class=3)
    raw = pickle.dumps((x, y))
    path = tmp_path / "cut.pkl"
    path.write_bytes(raw[: len(raw) // 2])
    assert_user_error(prepare_cli(tmp_path, path), "truncated")


x_ok, y_ok = make_dataset(per_class=3)
BAD_INPUTS = {
    "not a pair": ([1, 2, 3], "tuple"),
    "x one pixel short": ((x_ok[:, :-1], y_ok), "3135"),
    "x 3-D": ((x_ok.reshape(-1, 56, 56), y_ok), "shape"),
    "label too large": ((x_ok, np.where(y_ok == 0, 36, y_ok)), "0..35"),
    "negative label": ((x_ok, np.where(y_ok == 0, -1, y_ok)), "0..35"),
    "non-integer label": ((x_ok, y_ok + 0.5), "non-integer"),
    "string labels": ((x_ok, y_ok.astype(str)), "dtype"),
    "lengths differ": ((x_ok, y_ok[:-1]), "labels"),
    "empty": ((x_ok[:0], y_ok[:0]), "empty"),
    "NaN pixels": ((np.where(np.arange(x_ok.size).reshape(x_ok.shape) == 5, np.nan,
                             x_ok.astype(float)), y_ok), "nan"),
    "grey pixels": ((x_ok * 0.5, y_ok), "binary"),
    "ragged": (([[0, 1], [1]], [0, 1]), "ragged"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_contents_give_one_clear_line(tmp_path, case):
    obj, word = BAD_INPUTS[case]
    path = write_pickle(tmp_path / "bad.pkl", obj)
    assert_user_error(prepare_cli(tmp_path, path), word)
    assert not os.path.exists(tmp_path / "data")  # nothing written for bad data


@pytest.mark.parametrize("convert", [lambda x: x.astype(bool), lambda x: x * 255,
                                     lambda x: x.astype(np.float64), lambda x: x.tolist()])
def test_accepted_pixel_encodings(convert):
    x, y = make_dataset(per_class=2)
    got_x, got_y = data_sources.validate(convert(x), y.tolist(), "mem")
    assert got_x.dtype == np.uint8 and got_y.dtype == np.int64
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_plain_lists_and_protocols_load(tmp_path):
    x, y = make_dataset(per_class=2)
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps((x, y), protocol=protocol))
        got = data_sources.load_pickle(path.read_bytes(), str(path))
        np.testing.assert_array_equal(got[0], x)
    got = data_sources.load_pickle(pickle.dumps((x.tolist(), list(y))), "lists")
    assert len(got[0]) == len(x)


def test_split_is_stratified_disjoint_and_deterministic():
    rng = np.random.default_rng(3)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(rng.integers(5, 200, 36))])
    a = prepare_data.split_indices(y, seed=7)
    b = prepare_data.split_indices(y, seed=7)
    c = prepare_data.split_indices(y, seed=8)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["test"], c["test"])
    everything = np.concatenate([a["train"], a["val"], a["test"]])
    assert len(everything) == len(y) == len(np.unique(everything))
    for label in range(36):
        n = np.sum(y == label)
        for name, share in (("val", 0.2), ("test", 0.2)):
            assert abs(np.sum(y[a[name]] == label) - share * n) <= 1
    assert abs(len(a["train"]) / len(y) - 0.6) < 0.01


def test_tiny_class_goes_to_training_with_a_warning(capsys):
    y = np.array([0] * 10 + [1] * 10 + [2])
    split = prepare_data.split_indices(y, seed=0)
    assert 20 in split["train"] and 20 not in split["val"] and 20 not in split["test"]
    assert "class 2 has only 1 image" in capsys.readouterr().err


def test_prepare_caches_a_fast_split_with_manifest(tmp_path, tiny_pickle):
    cache = tmp_path / "cache"
    first = prepare_data.prepare(tiny_pickle, seed=5, prepared_dir=str(cache), verbose=False)
    manifest_files = list(cache.glob("*.json"))
    assert len(manifest_files) == 1
    manifest = json.loads(manifest_files[0].read_text())
    assert manifest["seed"] == 5 and len(manifest["source_sha256"]) == 64
    assert sum(manifest["counts"].values()) == 36 * 12
    assert manifest["class_counts"]["test"] == [2] * 36
    second = prepare_data.prepare(tiny_pickle, seed=5, prepared_dir=str(cache), verbose=False)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(first[key], second[key])
    assert first["x_train"].dtype == np.uint8


def test_cli_prints_class_table(tmp_path, tiny_pickle):
    result = prepare_cli(tmp_path, tiny_pickle)
    assert result.returncode == 0, result.stderr
    assert "   35       8      2      2      12" in result.stdout
    assert list((tmp_path / "data").glob("prepared-*.npz"))
    other = run_script("prepare_data.py", tiny_pickle, "--seed", "5", "--prepared_dir=cache",
                       cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    assert ["-seed5-" in path.name for path in (tmp_path / "cache").glob("*.npz")] == [True]
    assert "seed 5: prepared split in cache" in other.stdout


def test_embedded_default_is_real_digits_in_the_users_format(tmp_path):
    data = prepare_data.prepare(data_format.EMBEDDED, prepared_dir=str(tmp_path),
                                verbose=False)
    x = np.concatenate([data["x_train"], data["x_val"], data["x_test"]])
    y = np.concatenate([data["y_train"], data["y_val"], data["y_test"]])
    assert x.shape == (5000, 3136) and set(np.unique(x)) == {0, 1}
    assert np.bincount(y).tolist() == [500] * 10
    images = x.reshape(-1, 56, 56)
    # framed like the users' images: the ink spans the frame's height or width
    extent = np.maximum(images.any(1).sum(1), images.any(2).sum(1))
    assert np.median(extent) >= 50


def test_identical_images_are_split_together_and_counted(tmp_path):
    x, y = make_dataset(per_class=10, seed=3)
    # every image twice, and 5 images copied once more under another label
    x = np.concatenate([x, x, x[:5]])
    y = np.concatenate([y, y, (y[:5] + 1) % 36])
    path = write_pickle(tmp_path / "copies.pkl", (x, y))
    data = prepare_data.prepare(path, 3, str(tmp_path / "cache"), verbose=False)
    train = {row.tobytes() for row in data["x_train"]}
    for split in ("val", "test"):
        assert not [row for row in data[f"x_{split}"] if row.tobytes() in train], split
    assert not {row.tobytes() for row in data["x_val"]} & {row.tobytes() for row in data["x_test"]}
    assert data["manifest"]["copies"] == {"images": 725, "groups": 360,
                                          "groups_with_other_labels": 5}
    printed = prepare_cli(tmp_path, path)
    assert printed.returncode == 0, printed.stderr
    assert ("exact copies: 725 images are identical to another, in 360 groups, each kept in "
            "one split; 5 of the groups hold different labels") in printed.stdout
    # shares stay close to 60/20/20, counted in images
    assert abs(len(data["y_test"]) / len(y) - 0.2) < 0.03


def test_the_split_of_images_without_copies_is_one_image_at_a_time():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 36, 2000)
    alone = prepare_data.split_indices(y, seed=11)
    grouped = prepare_data.split_indices(y, seed=11, groups=np.arange(len(y)))
    for name in prepare_data.SPLITS:
        np.testing.assert_array_equal(alone[name], grouped[name])
    groups = np.arange(len(y))
    groups[1::2] = groups[0::2]  # pairs of copies, under the label of their first image
    y[1::2] = y[0::2]
    split = np.zeros(len(y), int)
    for code, name in enumerate(prepare_data.SPLITS):
        split[prepare_data.split_indices(y, seed=11, groups=groups)[name]] = code
    np.testing.assert_array_equal(split[0::2], split[1::2])


def test_a_pickle_that_would_unpack_to_gigabytes_is_refused_before_it_is_built(tmp_path):
    import tracemalloc
    # 86 KB: one row of 3136 numbers, referred to 20,000 times (numpy would build 500 MB)
    path = write_pickle(tmp_path / "bomb.pkl", ([[0] * 3136] * 20000, [0] * 20000))
    assert os.path.getsize(path) < 100_000
    tracemalloc.start()
    with pytest.raises(prepare_data.UserError, match="refused to load, its 0.08 MB would "
                                                      "build arrays of 0.5 GB"):
        prepare_data.prepare(path, prepared_dir=str(tmp_path / "cache"), verbose=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2 ** 20  # not the arrays: a few MB of Python objects at most
    # an honest pickle of plain lists, as large as the bomb would be, is not refused
    honest = write_pickle(tmp_path / "lists.pkl", (x_ok.tolist(), y_ok.tolist()))
    assert data_sources.load_pickle(open(honest, "rb").read(), honest)[0] == x_ok.tolist()
    # an .npz whose header promises more than its file could hold is refused from the header
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as archive:
        with archive.open("x.npy", "w") as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<i8", "fortran_order": False, "shape": (10 ** 6, 3136)})
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros(10 ** 6, np.int64))
    assert_user_error(prepare_cli(tmp_path, tmp_path / "bomb.npz"), "refused to load", "23.4 GB")
    # packed bits count as the bytes they unpack into: 59 MB packed, 470 MB unpacked
    with zipfile.ZipFile(tmp_path / "packed.npz", "w") as archive:
        with archive.open("x_packed.npy", "w") as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "|u1", "fortran_order": False, "shape": (150000, 392)})
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros(150000, np.int64))
    assert_user_error(prepare_cli(tmp_path, tmp_path / "packed.npz"), "refused to load", "0.4 GB")
    # compression is honest growth: 78 MB of packed bits in a file of a few hundred KB load
    rows = np.zeros((25000, 392), np.uint8)
    rows[:, 7] = 1
    np.savez_compressed(tmp_path / "honest.npz", x_packed=rows, y=np.arange(25000) % 10)
    assert os.path.getsize(tmp_path / "honest.npz") * 16 < 25000 * 3136
    assert data_sources.load_npz(open(tmp_path / "honest.npz", "rb").read(), "honest.npz")[0] \
        .shape == (25000, 3136)
    # text, which numpy would make as wide as its longest string, is not numbers: refused
    text = write_pickle(tmp_path / "text.pkl", ([["x" * 1000] * 3136] * 100, [0] * 100))
    assert_user_error(prepare_cli(tmp_path, text), "not numbers")


def test_the_recorded_stroke_width_samples_every_part_of_the_data():
    thin, thick = np.zeros((56, 56), np.uint8), np.zeros((56, 56), np.uint8)
    thin[10:40, 20:22], thick[10:40, 20:30] = 1, 1
    # sorted by class: 2,000 thin images, then 2,000 thick ones
    images = np.concatenate([np.repeat(thin[None], 2000, 0), np.repeat(thick[None], 2000, 0)])
    median = prepare_data.stroke_width(images.reshape(len(images), -1), percentile=90)
    assert median > 5  # the thick half is measured too, not only the first 1,000 images
