"""Shared test helpers: tiny generated datasets and runners for the scripts."""
import contextlib
import importlib
import io
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_DATA = os.path.join(ROOT, "..", "shared", "data", "train.pkl")
sys.path.insert(0, ROOT)


def make_dataset(per_class=12, num_classes=36, seed=0):
    """A learnable 36-class set: each class is a filled block at its own place on a 6x6 grid
    of the 56x56 frame, jittered by a pixel or two, with a little salt noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros((per_class * num_classes, 56, 56), np.uint8)
    y = np.repeat(np.arange(num_classes), per_class)
    for i, label in enumerate(y):
        top = 9 * (label // 6) + 1 + rng.integers(-1, 2)
        left = 9 * (label % 6) + 1 + rng.integers(-1, 2)
        x[i, max(top, 0):top + 7, max(left, 0):left + 7] = 1
    x |= (rng.random(x.shape) < 0.01).astype(np.uint8)
    order = rng.permutation(len(y))
    return x.reshape(len(y), -1)[order], y[order]


def write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return str(path)


@pytest.fixture
def tiny_pickle(tmp_path):
    return write_pickle(tmp_path / "train.pkl", make_dataset())


def run_script(script, *args, cwd, timeout=600):
    """Runs one of the project's scripts as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def run_in_process(script, *args, cwd):
    """Runs a top-level script's main() as `python script args` runs it (common.run: a
    UserError is one line and exit code 2), but in this process, whose TensorFlow has started
    already (about 6 s a process): for tests of what a script does, not of how its process
    starts or ends. Returns a CompletedProcess of the exit code, stdout and stderr."""
    import common
    module = importlib.import_module(os.path.splitext(script)[0].replace("/", "."))
    out, err, code = io.StringIO(), io.StringIO(), 0
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            common.run(lambda: module.main(list(args)))
    except SystemExit as exit:  # as Python ends a process: sys.exit("why") prints why
        code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
        if isinstance(exit.code, str):
            err.write(exit.code + "\n")
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def run_each_in_process(*commands, cwd):
    """run_in_process for each (script, *args) command in turn: their CompletedProcesses."""
    return [run_in_process(*command, cwd=cwd) for command in commands]


def run_scripts_together(*commands, cwd, timeout=600):
    """Runs several (script, *args) commands at once (their start-ups overlap on the cores);
    returns their CompletedProcess results in order."""
    started = [subprocess.Popen([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for script, *args in commands]
    results = []
    for process in started:
        out, err = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def assert_user_error(result, *words):
    """Exit code 2, exactly one line on stderr that names the problem, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


def refusal(main, *argv):
    """The message of the UserError that a script's main(argv) raises: what the shell shows
    after "error: " (tests run from the shell prove the one line and exit code 2)."""
    from common import UserError
    with pytest.raises(UserError) as error:
        main(list(argv))
    return str(error.value)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """One short training run on a generated 36-class pickle, shared by the tests that only
    read its outputs: (working dir, pickle path, what train.py printed)."""
    work = tmp_path_factory.mktemp("trained")
    data = write_pickle(work / "train.pkl", make_dataset())
    # no --verbose: stdout is no terminal here, so train.py must log one line per epoch itself
    result = run_in_process("train.py", f"--data={data}", "--epochs=2", "--batch_size=32",
                            cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, data, result.stdout


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory):
    """One epoch on the embedded digits, as a newcomer runs it (no train.pkl): (working dir,
    its test images, their labels)."""
    import data_format
    import prepare_data
    work = tmp_path_factory.mktemp("digits")
    trained = run_in_process("train.py", "--epochs=1", "--augment=False", cwd=work)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "EMBEDDED DEFAULT" in trained.stdout
    data = prepare_data.prepare(data_format.EMBEDDED, prepared_dir=str(work / "data"),
                                verbose=False)
    return work, data["x_test"], data["y_test"]


def png_header(width, height):
    """The start of a PNG file of width x height grey pixels: enough for Pillow to open (read
    its size), not to decode."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
                                                               0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


class Killed(BaseException):
    """Stands for a kill: not an Exception, so nothing on its way out catches it."""


def killed_after(count, folder, monkeypatch, named=None):
    """Makes the `count`-th file operation (an atomic write's rename, or a removal) in
    `folder` the last thing the process does: it happens, then Killed is raised. `named`:
    instead, the first operation on a path that ends with it."""
    done = []

    def deadly(operation):
        def wrapper(*args, **kwargs):
            result = operation(*args, **kwargs)
            if str(args[-1]).startswith(str(folder)) and not str(args[-1]).endswith(".lock"):
                done.append(args[-1])
                if len(done) == count or (named and str(args[-1]).endswith(named)):
                    raise Killed(args[-1])
            return result
        return wrapper
    monkeypatch.setattr(os, "replace", deadly(os.replace))
    monkeypatch.setattr(os, "remove", deadly(os.remove))
    return done
