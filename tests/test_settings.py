"""The command line and the settings it makes: both spellings of an option, refusals, frozen
settings that no module rewrites, trainings in one process that match separate ones, and the
packages the code imports, each declared."""
import ast
import dataclasses
import glob
import json
import os
import re

import pytest

from common import UserError, configure
from conftest import ROOT, make_dataset, run_scripts_together, write_pickle

NAMESPACE = {"__doc__": "A script.", "EPOCHS": 3, "RATE": 0.5, "FRESH": False, "DATA": "x.pkl",
             "_FIXED": ("SIDE",), "SIDE": 56}


def test_both_spellings_of_an_option_and_lone_switches():
    as_equals = configure(NAMESPACE, argv=["--epochs=7", "--rate=0.1", "--fresh=True"])
    as_words = configure(NAMESPACE, argv=["--epochs", "7", "--rate", "0.1", "--fresh"])
    assert as_equals == as_words and as_words.epochs == 7 and as_words.fresh is True
    assert configure(NAMESPACE, argv=["--fresh", "false", "--epochs", "2"]).fresh is False
    # a switch alone, then the lone argument: the data path
    settings = configure(NAMESPACE, argv=["--fresh", "my.pkl"], positional="DATA")
    assert settings.fresh is True and settings.data == "my.pkl"
    assert not hasattr(settings, "side")  # listed in _FIXED: not a setting
    assert configure(NAMESPACE, argv=["--rate", "-1e-3"]).rate == -1e-3  # a value, not an option
    settings, loose = configure(NAMESPACE, argv=["a.png", "--epochs", "1", "b.png"], positional="*")
    assert loose == ["a.png", "b.png"] and settings.epochs == 1


def test_settings_are_frozen_values():
    settings = configure(NAMESPACE, argv=["--epochs=4"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 5
    assert NAMESPACE["EPOCHS"] == 3  # the constants are defaults, never rewritten
    assert dataclasses.replace(settings, epochs=5).epochs == 5 and settings.epochs == 4


@pytest.mark.parametrize("argv, words", [
    (["--epochz=3"], ["unknown option '--epochz=3'", "did you mean --epochs?"]),
    (["-e=3"], ["unknown option '-e=3'"]),
    (["-s"], ["unknown option '-s'"]),
    (["--epochs"], ["--epochs needs a value"]),
    (["--data", "--fresh"], ["--data needs a value"]),  # an option is not a value
    (["--epochs", "three"], ["--epochs=three", "whole number"]),
    (["--fresh=maybe"], ["true or false"]),
    (["--side=3"], ["unknown option"]),  # a fact of the format, not a setting
    (["a", "b"], ["unexpected argument"]),
])
def test_refusals_name_the_problem(argv, words):
    with pytest.raises(UserError) as error:
        configure(NAMESPACE, argv=argv, positional="DATA")
    for word in words:
        assert word.lower() in str(error.value).lower(), str(error.value)


def test_no_module_writes_another_modules_constants():
    """The check of the issue that asked for settings passed, not patched: no assignment to
    model.X, augmentation.X or train.X anywhere in the scripts."""
    pattern = re.compile(r"\b(model_config|augmentation|model|augment|train)\.[A-Z][A-Z_0-9]* *=[^=]")
    sources = glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "bench", "*.py"))
    writes = [f"{path}: {line.strip()}" for path in sources for line in open(path)
              if pattern.search(line)]
    assert not writes, writes


def records_of(folder):
    """best.json without what names the run (its id and start time) and history.csv."""
    record = json.loads((folder / "best.json").read_text())
    for key in ("run_id", "started"):
        record.pop(key)
    return record, (folder / "history.csv").read_text()


def test_two_trainings_in_one_process_match_two_commands(tmp_path, monkeypatch):
    import train
    small = write_pickle(tmp_path / "small.pkl", make_dataset(per_class=12))
    large = write_pickle(tmp_path / "large.pkl", make_dataset(per_class=30, seed=3))
    runs = [[small, "--epochs=2", "--batch_size=32", "--out_dir=a"],  # cosine, by the size rule
            [large, "--epochs=3", "--dense_units=64", "--small_data=300", "--rotate=20",
             "--out_dir=b"]]  # plateau and 15 augmented epochs, other sizes and ranges
    (tmp_path / "separate").mkdir()
    for result in run_scripts_together(*[("train.py", *args, "--verbose=0") for args in runs],
                                       cwd=tmp_path / "separate"):
        assert result.returncode == 0, result.stderr[-3000:]
    (tmp_path / "together").mkdir()
    monkeypatch.chdir(tmp_path / "together")
    for args in runs:
        train.main([*args, "--verbose=0"])
    for name, schedule in (("a", "cosine"), ("b", "plateau")):
        separate, together = (records_of(tmp_path / where / name)
                              for where in ("separate", "together"))
        assert separate == together, name
        assert together[0]["settings"]["LR_SCHEDULE"] == schedule
    assert together[0]["settings"]["DENSE_UNITS"] == 64 and train.EPOCHS == 60


def declared(*files):
    """Distribution names (lower case) that these requirements files name, -r followed."""
    names = set()
    for name in files:
        for line in open(os.path.join(ROOT, name)):
            line = line.split("#")[0].strip()
            if line.startswith("-r "):
                names |= declared(line[3:].strip())
            elif line:
                names.add(re.split(r"[<>=!~;\[ ]", line)[0].lower().replace("_", "-"))
    return names


def imported_distributions(paths):
    """{distribution: [file]} of the installed packages that these files import at any depth
    of their code (top-level names, mapped by importlib.metadata)."""
    import importlib.metadata
    import sys
    local = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "*.py"))}
    local |= {"bench", "conftest", "settings_proofs"}
    of_module = importlib.metadata.packages_distributions()
    found = {}
    for path in paths:
        tree = ast.parse(open(path).read())
        modules = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for alias in node.names]
        modules += [node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module and not node.level]
        for module in {name.split(".")[0] for name in modules}:
            if module in sys.stdlib_module_names or module in local:
                continue
            for distribution in of_module.get(module, [module]):
                found.setdefault(distribution.lower().replace("_", "-"), []).append(
                    os.path.relpath(path, ROOT))
    return found


def test_every_imported_package_is_declared():
    scripts = glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "bench", "*.py"))
    runtime = declared("requirements.txt")
    missing = {name: files for name, files in imported_distributions(scripts).items()
               if name not in runtime}
    assert not missing, f"imported by the scripts, not in requirements.txt: {missing}"
    tests = glob.glob(os.path.join(ROOT, "tests", "*.py"))
    missing = {name: files for name, files in imported_distributions(tests).items()
               if name not in declared("requirements-dev.txt")}
    assert not missing, f"imported by the tests, in no requirements file: {missing}"
    assert {"pytest", "selenium"}.isdisjoint(runtime)  # test tools stay out of the runtime's
