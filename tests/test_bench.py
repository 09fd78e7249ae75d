"""The benchmark scripts run end to end on tiny data (their figures come from real runs, so
they are only smoke-tested here), and the lever study's made datasets are what it says."""
import json
import os
import re

import numpy as np

from bench import levers
from conftest import assert_user_error, make_dataset, run_in_process, run_script


def test_lever_study_runs_caches_and_reports(tmp_path, tiny_pickle):
    common = [f"--datasets={tiny_pickle}", "--train_args=--epochs=1", "--jobs=2",
              f"--work_dir={tmp_path / 'work'}"]
    result = run_script("bench/levers.py", *common, "--only=baseline,no-augmentation",
                        "--seeds=1", "--finalists=no-augmentation",
                        f"--output={tmp_path / 'levers.md'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "levers.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()
            if line.startswith("| baseline") or line.startswith("| no augmentation")}
    assert re.search(r"\| 0\.\d{4} \(1\) \|", rows["baseline"])  # one seed
    assert re.search(r"\| 0\.\d{4} \+- 0\.\d{4} \(3\) \|", rows["no augmentation"])  # finalist
    assert "`--augment=False`" in rows["no augmentation"]
    runs = os.listdir(tmp_path / "work" / "runs")
    assert len(runs) == 4  # 1 + 3 seeds, each trained and scored on its validation split
    for cached in os.listdir(tmp_path / "work" / "cache"):
        record = json.loads((tmp_path / "work" / "cache" / cached).read_text())
        assert 0 <= record["val"] <= 1 and record["epochs"] == 1
        assert "--epochs=1" in record["overrides"]

    quick = run_script("bench/levers.py", *common, "--quick=True", "--only=baseline",
                       f"--output={tmp_path / 'quick.md'}", cwd=tmp_path)
    assert quick.returncode == 0, quick.stderr[-3000:]
    assert len(os.listdir(tmp_path / "work" / "runs")) == 4  # cached: nothing retrained
    assert "QUICK MODE" in (tmp_path / "quick-quick.md").read_text()

    # --run=False: the table from the cache alone; a lever never run shows "-" and is not trained
    report = run_script("bench/levers.py", *common, "--run=False", "--seeds=1",
                        "--only=baseline,dropout-0-2", f"--output={tmp_path / 'report.md'}",
                        cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    assert len(os.listdir(tmp_path / "work" / "runs")) == 4
    rows = [line for line in (tmp_path / "report.md").read_text().splitlines()
            if line.startswith("| baseline") or line.startswith("| dropout 0.2")]
    assert re.search(r"\| 0\.\d{4} \(1\) \|", rows[0]) and "| - |" in rows[1]

    # --split=test: the final check scores the cached runs' checkpoints, trains nothing new
    test = run_script("bench/levers.py", *common, "--split=test", "--only=no-augmentation",
                      "--seeds=1", f"--output={tmp_path / 'final.md'}", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert len(os.listdir(tmp_path / "work" / "runs")) == 4
    final = (tmp_path / "final-test.md").read_text()
    assert "TEST SPLITS" in final and "Test accuracy" in final
    records = [json.loads((tmp_path / "work" / "cache" / c).read_text())
               for c in os.listdir(tmp_path / "work" / "cache")]
    scored = [r for r in records if "test" in r]
    assert len(scored) == 1 and scored[0]["overrides"].startswith("--augment=False")
    assert f"| {scored[0]['test']:.4f} (1) |" in final


def test_made_datasets_are_small_or_hard_as_described():
    x, y = make_dataset(per_class=20)
    keep = levers.stratified_subset(y, 360, seed=0)
    assert len(keep) == 360 and np.bincount(y[keep]).tolist() == [10] * 36
    hard_x, hard_y = levers.harden(x[:60], y[:60], seed=0)
    assert hard_x.shape == (60, 3136) and set(np.unique(hard_x)) <= {0, 1}
    assert not np.array_equal(hard_x, x[:60])
    assert 0 < np.mean(hard_y != y[:60]) < 0.2  # a few labels replaced by another class
    images = hard_x.reshape(-1, 56, 56)  # reframed: the ink spans the frame again
    assert np.median([max(np.ptp(np.nonzero(i)[0]), np.ptp(np.nonzero(i)[1])) for i in images]) >= 50


def test_accuracy_benchmark_runs_both_recipes(tmp_path, tiny_pickle):
    result = run_in_process("bench/accuracy.py", f"--data={tiny_pickle}", "--seeds=1",
                            "--quick=True", "--reference_steps=20", "--reference_augment=True",
                            "--train_args=--epochs=1", f"--work_dir={tmp_path / 'work'}",
                            f"--output={tmp_path / 'accuracy.md'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "accuracy.md").read_text()
    assert "QUICK MODE" in table and "reference + imgaug (20 steps)" in table
    ours = [line for line in table.splitlines() if line.startswith("| ours (train.py defaults --epochs=1) | 1 |")]
    assert len(ours) == 1 and "| 1.0 |" in ours[0]  # --seeds=1, --train_args=--epochs=1
    assert list((tmp_path / "work").glob("reference-*-seed1-steps20-augmentTrue.json"))
    assert re.search(r"Error reduction of ours against the reference", table)


def test_speed_benchmark_reports_every_measure(tmp_path):
    result = run_script("bench/speed.py", "--train_images=128", "--test_images=64",
                        "--epochs=2", "--dense_units=64", "--command_repeats=1",
                        "--folder_images=30", f"--output={tmp_path / 'speed.md'}",
                        cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "speed.md").read_text()
    for measure in ("ours: epoch, augmentation on", "compute floor", "plain way",
                    "augmentation cost", "peak memory", "command: python train.py --help",
                    "command: python predict.py --checkpoint=best.keras one.png",
                    "framing image files one by one", "framing a folder of 30 such PNGs",
                    "framing a folder: speed-up against one by one (framing.py)"):
        assert measure in table, measure
    assert "128 training and 64 test images" in result.stdout
    assert "data: generated" in result.stdout  # --data: no such file here, so generated images
    import model
    assert f"model: {model.build_model(dense_units=64).count_params():,} parameters" in result.stdout


def test_speed_levers_time_each_lever_against_the_baseline(tmp_path):
    result = run_script("bench/speed_levers.py", "--only=onednn-off", "--repeats=1",
                        "--rounds=1", "--steps=2", f"--output={tmp_path / 'levers.md'}",
                        cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "levers.md").read_text()
    assert "fastest of 1 rounds of 2 steps, 1 runs per lever" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # no header
    assert [row.split(" | ")[0] for row in rows] == ["| baseline", "| onednn-off"]
    assert re.search(r"\| baseline \| .* \| [\d.]+ \| 1\.00x \| [\d.]+ \| 1\.00x \|$", rows[0])
    # each baseline run is listed: one before the lever and one after
    assert re.search(r"cached batch [\d.]+/[\d.]+, augmented pipeline [\d.]+/[\d.]+", table)
    assert_user_error(run_script("bench/speed_levers.py", "--only=warp", cwd=tmp_path),
                      "no lever warp")


def test_the_fused_adam_lever_is_adams_maths_with_adams_slots():
    import keras
    from bench import speed_levers
    weights, slots = [], []
    for optimizer in (keras.optimizers.Adam(0.01), speed_levers.fused_adam()(0.01)):
        keras.utils.set_random_seed(3)
        net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        net.compile(optimizer=optimizer, loss="mse")
        net.fit(np.arange(32.0).reshape(8, 4) / 32, np.ones((8, 3)), epochs=3, verbose=0)
        weights.append(net.get_weights())
        slots.append([(v.name.split("_")[-1], tuple(v.shape)) for v in optimizer.variables])
    for adam, fused in zip(*weights):
        np.testing.assert_allclose(adam, fused, rtol=1e-5, atol=1e-7)
        assert not np.allclose(adam, 0)  # it trained
    assert slots[0] == slots[1]  # the same slot variables: checkpoints read the same


def test_a_speed_levers_process_times_both_ways(capsys):
    from bench import speed_levers
    # a lever's own process reports both measures (here the space-to-depth network's)
    speed_levers.main(["--child=space-to-depth", "--rounds=1", "--steps=1"])
    timed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(timed) == {"cached batch", "augmented pipeline"} and min(timed.values()) > 0


def test_ceiling_compares_models_of_one_split(tmp_path, trained_tiny):
    work, data, _ = trained_tiny
    for trained in (("--out_dir=dropout", "--dropout=0.2"), ("--out_dir=other-seed", "--seed=7")):
        result = run_in_process("train.py", f"--data={data}", "--epochs=1", *trained, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    runs = [str(work / "out"), str(tmp_path / "dropout"), str(tmp_path / "other-seed")]
    mixed = run_script("bench/ceiling.py", *runs, cwd=tmp_path)
    assert_user_error(mixed, "another seed", "--data_seed")
    # the records are read first: a mixed split is named before any model is loaded
    (tmp_path / "unloadable").mkdir()
    (tmp_path / "unloadable" / "best.keras").write_text("not a model")
    (tmp_path / "unloadable" / "best.json").write_text(
        (tmp_path / "other-seed" / "best.json").read_text())
    assert_user_error(run_script("bench/ceiling.py", runs[0], str(tmp_path / "unloadable"),
                                 cwd=tmp_path), "another seed")
    assert_user_error(run_script("bench/ceiling.py", runs[0], "missing", cwd=tmp_path),
                      "missing", "no such run")
    assert_user_error(run_script("bench/ceiling.py", *runs, "--data_seed=7", cwd=tmp_path),
                      "1 checkpoint", "at least 2")

    result = run_script("bench/ceiling.py", *runs, "--data_seed=1337", f"--data={data}",
                        "--split=test", "--shift=2", "--top_confusions=1", "--labels=none",
                        "--prepared_dir=prepared", f"--output={tmp_path / 'ceiling.md'}",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "ceiling.md").read_text()
    assert "test split" in report and "shifts of 2 px" in report
    assert os.listdir(tmp_path / "prepared")
    rows = [line for line in report.splitlines() if line.startswith("| ") and "best.keras" in line]
    assert len(rows) == 2 and "--dropout=0.4" in rows[0] and "--dropout=0.2" in rows[1]
    pairs = report.split("```")[1].strip().splitlines()
    assert len(pairs) == 1 and re.match(r"\d+ -> \d+ +\d+|none", pairs[0].strip())

    # the figures are the models' own: recompute them from the checkpoints and the test split
    import evaluate
    import inference
    from bench import ceiling
    models = [inference.load_checkpoint(os.path.join(run, "best.keras")) for run in runs[:2]]
    x, y = evaluate.load_split(models[0][1], "test", prepared_dir=str(tmp_path / "prepared"))
    probabilities = [inference.probabilities(model, x) for model, _ in models]
    for row, (model, _), p in zip(rows, models, probabilities):
        shifted = ceiling.shift_averaged(model, x, 2).argmax(1)
        assert row.endswith(f"| {np.mean(p.argmax(1) == y):.4f} | {np.mean(shifted == y):.4f} |")
    ensemble = np.mean(probabilities, axis=0).argmax(1)
    assert f"**{np.mean(ensemble == y):.4f}**" in report
    every = np.all([p.argmax(1) != y for p in probabilities], axis=0).sum()
    assert f"Errors every model makes: {every} (" in report


def test_ceiling_shifts_and_counts_identical_images_of_other_classes():
    from bench import ceiling
    image = np.zeros((1, 5, 5), np.uint8)
    image[0, 2, 2] = 1
    assert ceiling.shifted(image, 1, 0)[0, 3, 2] == 1 and ceiling.shifted(image, 1, 0).sum() == 1
    assert ceiling.shifted(image, 0, -2)[0, 2, 0] == 1
    assert ceiling.shifted(image, 3, 0).sum() == 0  # moved out of the frame, not wrapped around
    x = np.array([[1, 0, 1], [1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1]], np.uint8)
    y = np.array([4, 4, 9, 2, 2])  # three identical images, one of them labelled otherwise
    assert ceiling.identical_conflicts(x, y) == 1


def test_deeper_probe_trains_its_own_network_with_train_py_recipe(tmp_path, tiny_pickle):
    assert_user_error(run_script("bench/deeper.py", tiny_pickle, "--teacher_widths=8,8pp",
                                 cwd=tmp_path), "--teacher_widths=8,8pp")
    result = run_in_process("bench/deeper.py", tiny_pickle, "--teacher_widths=8p,16,12p",
                            "--epochs=1", "--dense_units=24", "--dropout=0.1", "--augment=False",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    import keras
    network = keras.saving.load_model(tmp_path / "out" / "best.keras", compile=False)
    of_kind = lambda kind: [layer for layer in network.layers  # noqa: E731
                            if layer.__class__.__name__ == kind]
    assert [layer.filters for layer in of_kind("Conv2D")] == [32, 8, 16, 12]  # first, widths
    assert len(of_kind("BatchNormalization")) == 4 and len(of_kind("MaxPooling2D")) == 2
    assert [layer.rate for layer in of_kind("Dropout")] == [0.1, 0.1]
    assert [layer.units for layer in of_kind("Dense")] == [24, 36]
    from bench.speed import training_flops_per_image
    import model
    ours = training_flops_per_image(model.build_model(dense_units=24, dropout=0.1))
    deeper = training_flops_per_image(network)
    assert (f"training FLOPs per image: {deeper / 1e6:.0f} million for the teacher, "
            f"{ours / 1e6:.0f} million for the classifier ({deeper / ours:.1f}x)") in result.stdout
    record = json.loads((tmp_path / "out" / "best.json").read_text())
    settings = record["settings"]
    assert settings["TEACHER_WIDTHS"] == "8p,16,12p" and settings["DENSE_UNITS"] == 24
    assert settings["NETWORK"] == "teacher"
    assert not settings["AUGMENT"] and record["best_epoch"] == 1


def test_profile_breaks_a_step_down(tmp_path):
    # in a process of its own, where the layers' names are the first of their kind (conv2d)
    result = run_script("bench/profile.py", "--repeats=2", "--pipeline_steps=3",
                        "--batch_size=16", f"--output={tmp_path / 'profile.md'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "profile.md").read_text()
    rows = {line.split(" | ")[0].strip("| *"): line for line in table.splitlines()
            if line.startswith("| ")}
    # every layer that computes, both ways, then the optimiser, the sum, the step, the pipeline
    for part in ("conv2d forward", "conv2d backward", "conv2d_1 backward", "max_pooling2d forward",
                 "dense backward", "probabilities forward", "dropout forward",
                 "optimiser update (Adam, all weights)", "the parts, added up",
                 "the whole step: model.fit on one cached batch"):
        assert part in rows, part
    assert "flatten forward" not in rows  # a reshape: not timed
    assert "batch 16" in table  # --batch_size
    parts = [float(line.split(" | ")[1]) for name, line in rows.items()
             if name.endswith(("forward", "backward")) or name.startswith("optimiser")]
    total = float(rows["the parts, added up"].split(" | ")[1].strip("*"))
    assert abs(sum(parts) - total) < 0.01 + 1e-3 * len(parts) and total > 0
    # the first convolution does 2 x 5x5 x 28x28x32 multiply-adds an image: its rate is that
    # over its time
    # (on a machine so busy that the call's own cost, taken off, leaves nothing: not shown)
    forward = rows["conv2d forward"].split(" | ")
    if float(forward[1]) > 0:
        rate = 2 * 25 * 28 * 28 * 32 * 16 / (float(forward[1]) / 1e3) / 1e9
        assert abs(float(forward[3].split()[0]) - rate) <= max(1, 0.02 * rate), (forward, rate)


def test_starting_points_compare_scratch_and_init_from(tmp_path, tiny_pickle):
    source = run_in_process("train.py", tiny_pickle, "--epochs=1", "--dense_units=16",
                            "--out_dir=source", cwd=tmp_path)
    assert source.returncode == 0, source.stderr[-3000:]
    assert_user_error(run_script("bench/starting_points.py", "--per_class=3,x", cwd=tmp_path),
                      "--per_class=3,x")
    result = run_in_process("bench/starting_points.py", f"--data={tiny_pickle}",
                        "--sources=source/best.keras", "--per_class=3", "--seeds=2",
                        "--train_args=--epochs=1 --dense_units=16", "--work_dir=work",
                        "--output=points.md", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "points.md").read_text()
    assert "| training images per class | from scratch | from source/best.keras |" in table
    assert re.search(r"^\| 3 \| [\d.]+ \+- 0\.0000 \(1\) \| [\d.]+ \+- 0\.0000 \(1\) \|$", table, re.M)
    # each small set holds 5 images a class (3 / 0.6) for --per_class=3, drawn with the seed
    small = np.load(tmp_path / "work" / "train-3-per-class-seed2.npz")
    assert np.bincount(small["y"]).tolist() == [5] * 36
    record = json.loads((tmp_path / "work" / "runs" / "3-seed2-from1" / "best.json").read_text())
    assert record["settings"]["INIT_FROM"] == "source/best.keras" and record["data"]["seed"] == 2
    # the same command again reuses the finished runs
    again = run_in_process("bench/starting_points.py", f"--data={tiny_pickle}",
                       "--sources=source/best.keras", "--per_class=3", "--seeds=2",
                       "--train_args=--epochs=1 --dense_units=16", "--work_dir=work",
                       "--output=again.md", cwd=tmp_path)
    assert again.returncode == 0 and "best epoch" not in again.stdout, again.stderr[-3000:]
    assert (tmp_path / "again.md").read_text().replace("again.md", "points.md") == table
