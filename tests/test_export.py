"""export.py: a SavedModel and a TFLite file that load without this repository and agree with
the .keras model; label names beside them; clear refusals."""
import subprocess
import sys
import textwrap

import numpy as np

import evaluate
import prepare_data
from conftest import assert_user_error, refusal, run_script

# Runs in a separate Python, from a folder outside the repository: only TensorFlow and numpy.
RELOAD = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    images = np.load("images.npy").astype(np.float32)  # N x 56 x 56 x 1, 0/1
    exported = tf.saved_model.load("export/saved_model")  # keep it: serve() uses its variables
    served = exported.serve(images).numpy()
    interpreter = tf.lite.Interpreter(model_path="export/model.tflite")
    interpreter.resize_tensor_input(0, images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert not {"prepare_data", "evaluate", "model", "export"} & set(sys.modules)
    np.save("served.npy", served)
    np.save("lite.npy", lite)
""")


def test_exports_reload_without_this_repo_and_agree(trained_tiny, tmp_path):
    work, data, _ = trained_tiny
    checkpoint = str(work / "out" / "best.keras")
    result = run_script("export.py", checkpoint, "--export_dir=export", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote export/model.tflite" in result.stdout
    labels = (tmp_path / "export" / "labels.txt").read_text().splitlines()
    assert len(labels) == 36 and labels[14] == "14 N" and labels[10] == "10 0"

    model, record = evaluate.load_checkpoint(checkpoint)
    split = prepare_data.prepare(data, record["data"]["seed"], str(tmp_path / "cache"),
                                 verbose=False)
    images = split["x_test"].reshape(-1, 56, 56, 1)
    np.save(tmp_path / "images.npy", images)
    reloaded = subprocess.run([sys.executable, "-c", RELOAD], cwd=tmp_path, capture_output=True,
                              text=True, env={"PATH": "/usr/bin:/bin"})
    assert reloaded.returncode == 0, reloaded.stderr[-3000:]
    expected = evaluate.predict_probabilities(model, split["x_test"])
    for name in ("served", "lite"):
        got = np.load(tmp_path / f"{name}.npy")
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_export_settings_and_refusals(trained_tiny, tmp_path):
    work, _, _ = trained_tiny
    result = run_script("export.py", f"--checkpoint={work / 'out' / 'best.keras'}",
                        "--export_dir=only", "--tflite=False", "--labels=none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == ["labels.txt", "saved_model"]
    assert (tmp_path / "only" / "labels.txt").read_text().splitlines()[14] == "14 14"
    assert_user_error(run_script("export.py", "--checkpoint=missing.keras", cwd=tmp_path),
                      "not found")
    import export
    (tmp_path / "file").write_text("x")
    assert "is a file" in refusal(export.main, f"--checkpoint={work / 'out' / 'best.keras'}",
                                  f"--export_dir={tmp_path / 'file'}")
