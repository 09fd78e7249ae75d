"""Reports, plots, class names and predict.py, on a generated 36-class set and on the
embedded digits."""
import json
import re

import numpy as np
import pytest
from PIL import Image

import prepare_data
from conftest import assert_user_error, run_script


def test_class_names_from_files_and_fallbacks(tmp_path):
    real = prepare_data.class_names("auto", "/some/train.pkl")
    assert real[14] == "14:N" and real[30] == "30:N" and real[10] == "10:0" and real[2] == "2:O"
    assert prepare_data.class_names("auto", prepare_data.EMBEDDED)[:3] == ["0:0", "1:1", "2:2"]
    assert prepare_data.class_names("none", "x")[35] == "35"
    mapping = tmp_path / "names.txt"
    mapping.write_text("# partial mapping\n0 a\n5 b\n")
    names = prepare_data.class_names(str(mapping), "x")
    assert names[0] == "0:a" and names[5] == "5:b" and names[1] == "1"
    mapping.write_text("zero a\n")
    with pytest.raises(prepare_data.UserError):
        prepare_data.class_names(str(mapping), "x")


def test_evaluate_reports_and_plots(trained_tiny):
    work, _, _ = trained_tiny
    result = run_script("evaluate.py", "--plots=True", "--split=val", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "precision" in out and "recall" in out and "f1-score" in out
    assert re.search(r"^\s+14:N\s+\d\.\d{3}\s+\d\.\d{3}\s+\d\.\d{3}\s+2$", out, re.M)
    assert "most confused pairs" in out
    assert out.strip().splitlines()[-1].startswith("val accuracy: ")
    for name, min_size in (("confusion-val", (900, 900)), ("errors-val", (600, 100)),
                           ("curves", (800, 300))):
        path = work / "out" / f"best-{name}.png"
        assert path.stat().st_size > 5000, path
        with Image.open(path) as image:
            assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size


def test_evaluate_rejects_a_bad_split(trained_tiny):
    work, _, _ = trained_tiny
    assert_user_error(run_script("evaluate.py", "--split=train", cwd=work), "val or test")


def test_predict_reads_back_pngs_with_evaluates_labels(trained_tiny, tmp_path):
    import evaluate
    work, data, _ = trained_tiny
    model, record = evaluate.load_checkpoint(str(work / "out" / "best.keras"))
    split = prepare_data.prepare(data, record["data"]["seed"], str(tmp_path / "cache"),
                                 verbose=False)
    x = split["x_test"][:12]
    expected = evaluate.predict_probabilities(model, x).argmax(1)
    paths = []
    for i, image in enumerate(x):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(image.reshape(56, 56) * 255).save(paths[-1])
    np.save(tmp_path / "batch.npy", x[:3])
    result = run_script("predict.py", f"--checkpoint={work / 'out' / 'best.keras'}",
                        "--json=True", *paths, str(tmp_path / "batch.npy"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [row["label"] for row in rows[:12]] == expected.tolist()
    assert [row["label"] for row in rows[12:]] == expected[:3].tolist()
    assert all(len(row["top"]) == 3 for row in rows)
    assert rows[0]["top"][0]["probability"] >= rows[0]["top"][1]["probability"]


def test_predict_function_and_bad_inputs(trained_tiny, tmp_path):
    import predict
    work, _, _ = trained_tiny
    checkpoint = str(work / "out" / "best.keras")
    x = np.zeros((2, 56, 56), np.uint8)
    x[:, 10:20, 10:20] = 1
    labels = predict.predict(x, checkpoint)
    assert labels.shape == (2,) and labels[0] == labels[1]
    assert predict.load_model(checkpoint) is predict.load_model(checkpoint)  # loaded once
    (tmp_path / "junk.png").write_text("not an image")
    assert_user_error(run_script("predict.py", f"--checkpoint={checkpoint}", "junk.png",
                                 cwd=tmp_path), "not a readable image")


def test_embedded_default_end_to_end_with_digit_names(tmp_path):
    """The newcomer's path: no train.pkl, train, evaluate, predict a scanned-looking PNG."""
    trained = run_script("train.py", "--epochs=1", "--verbose=2", "--augment=False",
                         cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "EMBEDDED DEFAULT" in trained.stdout
    scored = run_script("evaluate.py", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert re.search(r"^\s+7:7\s+\d\.\d{3}", scored.stdout, re.M)
    accuracy = float(re.search(r"test accuracy: (\d\.\d+)", scored.stdout).group(1))
    assert accuracy > 0.8  # one epoch on 3,000 real digits; chance is 0.1
    # a dark-on-light, off-centre, larger scan of a digit is still recognised
    data = prepare_data.prepare(prepare_data.EMBEDDED, prepared_dir=str(tmp_path / "data"),
                                verbose=False)
    sevens = data["x_test"][data["y_test"] == 7][:5]
    paths = []
    for i, image in enumerate(sevens):
        scan = np.full((180, 140), 235, np.uint8)
        scan[30:142, 20:132] = 235 - 200 * np.kron(image.reshape(56, 56), np.ones((2, 2), np.uint8))
        paths.append(str(tmp_path / f"scan{i}.jpg"))
        Image.fromarray(scan).save(paths[-1], quality=90)
    result = run_script("predict.py", "--json=True", *paths, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    labels = [json.loads(line)["label"] for line in result.stdout.strip().splitlines()]
    assert labels.count(7) >= 4, labels
