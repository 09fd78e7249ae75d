"""evaluate.py --suspects: labels flipped on purpose come out on top, each image judged by a model
that never trained on it (the checkpoint for validation and test, k-fold runs for training)."""
import csv
import json

import numpy as np

from conftest import make_dataset, write_pickle


def test_flipped_labels_come_out_on_top_of_the_suspects(tmp_path, monkeypatch, capsys):
    import evaluate
    import prepare_data
    import train
    x, y = make_dataset(per_class=16)
    flipped = np.random.default_rng(1).choice(len(y), 10, replace=False)
    given = y.copy()
    given[flipped] = (y[flipped] + 1 + np.arange(10) % 35) % 36  # another class, surely
    data = write_pickle(tmp_path / "train.pkl", (x, given))
    monkeypatch.chdir(tmp_path)
    train.main([data, "--epochs=5", "--verbose=0"])
    capsys.readouterr()
    evaluate.main(["--suspects", "--folds=2", "--top_suspects=20", "--plots"])
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "out/best-suspects.csv")))
    assert len(rows) == len(y)
    top = [int(row["image"].split()[1]) for row in rows[:20]]
    assert len(set(top) & set(flipped.tolist())) >= 8, (sorted(top), sorted(flipped))
    prepared = prepare_data.prepare(data, 1337, "data", verbose=False)
    splits = {row["split"] for row in rows if int(row["image"].split()[1]) in flipped}
    assert "train" in splits and splits - {"train"}, splits  # judged in every kind of split
    # for the flipped ones, the label the models prefer is the true one
    assert sum(int(row["preferred"].split(":")[0]) == y[int(row["image"].split()[1])]
               for row in rows[:20] if int(row["image"].split()[1]) in flipped) >= 8
    assert printed.count("): labelled ") == 20 and (tmp_path / "out/best-suspects.png").exists()
    # each fold's run trained without its part of the training split, which the record keeps
    run_id = json.load(open(tmp_path / "out/best.json"))["run_id"]
    folds = [json.load(open(tmp_path / f"out/suspects/{run_id}-2-folds/fold-{k}/best.json"))
             for k in (1, 2)]
    assert all(record["settings"]["HELD_OUT"] for record in folds)
    trained = [record["data"]["counts"]["train"] for record in folds]
    # ranked again: the finished folds are used as they are, the ranking is the same
    ranking = (tmp_path / "out/best-suspects.csv").read_text()
    evaluate.main(["--suspects", "--folds=2", "--top_suspects=0"])
    assert "training on" not in capsys.readouterr().out
    assert (tmp_path / "out/best-suspects.csv").read_text() == ranking
    assert sum(len(record["history"]) for record in folds) == 10
    assert trained[0] == len(prepared["y_train"])  # the manifest's count: the whole split
