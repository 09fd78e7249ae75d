"""export.py: a SavedModel and TFLite files (float32 and int8) that load without this
repository and agree with the .keras model; their sizes and test accuracies; label names beside
them; clear refusals."""
import re
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

import evaluate
import inference
import prepare_data
from conftest import (assert_user_error, make_dataset, refusal, run_each_in_process,
                      run_in_process, run_script, write_pickle)

# Runs in a separate Python, from a folder outside the repository: only TensorFlow, LiteRT
# and numpy, as the README shows.
RELOAD = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    images = np.load("images.npy").astype(np.float32)  # N x 56 x 56 x 1, 0/1
    exported = tf.saved_model.load("export/saved_model")  # keep it: serve() uses its variables
    np.save("served.npy", exported.serve(images).numpy())
    for name in ("model", "model-int8"):
        lite = Interpreter(model_path=f"export/{name}.tflite")
        lite.resize_tensor_input(0, images.shape)
        lite.allocate_tensors()
        lite.set_tensor(lite.get_input_details()[0]["index"], images)
        lite.invoke()
        np.save(f"{name}.npy", lite.get_tensor(lite.get_output_details()[0]["index"]))
    assert not {"prepare_data", "evaluate", "model", "export"} & set(sys.modules)
""")


def test_exports_reload_without_this_repo_and_agree(trained_tiny, tmp_path):
    work, data, _ = trained_tiny
    checkpoint = str(work / "out" / "best.keras")
    result = run_in_process("export.py", checkpoint, "--export_dir=export", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = dict(re.findall(r"wrote export/(\S+) \(.*\): [\d.]+ MB, test accuracy "
                              r"(\d\.\d{4}) \(72 images\)", result.stdout))
    assert set(printed) == {"saved_model", "model.tflite", "model-int8.tflite"}, result.stdout
    float_size, int8_size = (os.path.getsize(tmp_path / "export" / name)
                             for name in ("model.tflite", "model-int8.tflite"))
    assert int8_size < float_size / 3  # int8 weights: a quarter of the size, and a little
    labels = (tmp_path / "export" / "labels.txt").read_text().splitlines()
    assert len(labels) == 36 and labels[14] == "14 N" and labels[10] == "10 0"

    model, record = inference.load_checkpoint(checkpoint)
    split = prepare_data.prepare(data, record["data"]["seed"], str(tmp_path / "cache"),
                                 verbose=False)
    images = split["x_test"].reshape(-1, 56, 56, 1)
    np.save(tmp_path / "images.npy", images)
    reloaded = subprocess.run([sys.executable, "-c", RELOAD], cwd=tmp_path, capture_output=True,
                              text=True, env={"PATH": "/usr/bin:/bin"})
    assert reloaded.returncode == 0, reloaded.stderr[-3000:]
    expected = inference.probabilities(model, split["x_test"])
    accuracy = np.mean(expected.argmax(1) == split["y_test"])
    for name in ("served", "model"):
        got = np.load(tmp_path / f"{name}.npy")
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert float(printed["saved_model"]) == float(printed["model.tflite"]) == round(accuracy, 4)
    int8 = np.load(tmp_path / "model-int8.npy")  # close, not equal: 8-bit values
    assert int8.shape == expected.shape and np.abs(int8 - expected).max() < 0.1
    assert np.mean(int8.argmax(1) == expected.argmax(1)) >= 0.9
    assert float(printed["model-int8.tflite"]) == round(np.mean(int8.argmax(1) == split["y_test"]), 4)
    # the exports give predict.py's calibrated probabilities (the temperature is in the weights)
    assert abs(np.log(record["calibration"]["temperature"])) > 0.05
    np.save(tmp_path / "flat.npy", split["x_test"][:8])
    said = run_in_process("predict.py", "--lite=False", "--json=True", "--top=36",
                          f"--checkpoint={checkpoint}", "flat.npy", cwd=tmp_path)
    assert said.returncode == 0, said.stderr[-3000:]
    for row, served in zip(map(json.loads, said.stdout.splitlines()), np.load(tmp_path / "served.npy")):
        told = {guess["label"]: guess["probability"] for guess in row["top"]}
        np.testing.assert_allclose([told[label] for label in range(36)], served, atol=1e-4)


def test_export_settings_and_refusals(trained_tiny, tmp_path):
    work, _, _ = trained_tiny
    checkpoint = f"--checkpoint={work / 'out' / 'best.keras'}"
    write_pickle(tmp_path / "other.pkl", make_dataset(seed=5))
    float_only, few, other = run_each_in_process(
        ("export.py", checkpoint, "--export_dir=float", "--int8=False", "--prepared_dir=elsewhere"),
        ("export.py", checkpoint, "--export_dir=few", "--calibration_images=7"),
        ("export.py", checkpoint, "--export_dir=other", "--tflite=False", "--data=other.pkl",
         "--labels=none"),
        cwd=tmp_path)
    for result in (float_only, few, other):
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "float").iterdir()) == [
        "labels.txt", "model.tflite", "saved_model"]
    assert "int8 TFLite, calibrated on 7 training images" in few.stdout
    assert "no test accuracies" in other.stdout and "not the data" in other.stdout
    assert (tmp_path / "elsewhere").is_dir()  # the split was prepared where it was told
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["labels.txt", "saved_model"]
    assert (tmp_path / "other" / "labels.txt").read_text().splitlines()[14] == "14 14"
    assert_user_error(run_script("export.py", "--checkpoint=missing.keras", cwd=tmp_path),
                      "not found")
    import export
    (tmp_path / "file").write_text("x")
    assert "is a file" in refusal(export.main, f"--checkpoint={work / 'out' / 'best.keras'}",
                                  f"--export_dir={tmp_path / 'file'}")


def test_export_scores_the_files_it_wrote_and_leaves_no_stale_ones(trained_tiny, tmp_path,
                                                                   monkeypatch, capsys):
    import export
    work, _, _ = trained_tiny
    checkpoint = str(work / "out" / "best.keras")
    common = [checkpoint, f"--export_dir={tmp_path / 'exp'}", f"--prepared_dir={work / 'data'}"]
    export.main([*common, "--int8=False"])
    assert (tmp_path / "exp" / "model.tflite").exists()
    model, record = inference.load_checkpoint(checkpoint)
    x, y = evaluate.load_split(record, "test", prepared_dir=str(work / "data"))
    accuracy = np.mean(inference.probabilities(model, x).argmax(1) == y)
    write_saved_model = export.export_saved_model

    def then_spoil_the_model_in_memory(model, *args):
        write_saved_model(model, *args)
        for weight in model.weights:
            weight.assign(np.zeros(weight.shape, np.float32))
    monkeypatch.setattr(export, "export_saved_model", then_spoil_the_model_in_memory)
    capsys.readouterr()
    export.main([*common, "--tflite=False"])
    printed = capsys.readouterr().out
    # the SavedModel's accuracy is that of the file on disk, not of the spoilt model in memory
    assert re.search(rf"saved_model \(SavedModel\): [\d.]+ MB, test accuracy {accuracy:.4f}",
                     printed), printed
    # the TFLite file of the run before is gone, not left beside this run's labels.txt
    assert "removed the earlier" in printed and "model.tflite" in printed
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["labels.txt", "saved_model"]
