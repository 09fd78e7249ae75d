"""Small helpers shared by every script: settings from the shell, help, clean errors, atomic
writes.

Each script keeps its settings as UPPER_CASE constants at the top, each with a comment, and its
`main(argv=None)` calls `configure(globals(), argv=argv)`. That reads the command line
(`--epochs=5` or `--epochs 5`, typed like the default; sys.argv unless argv is given) into a
frozen `Settings` value, by lower-case name (`settings.epochs`), which main() passes on to the
functions that need it; no constant is ever rewritten.
`--help` lists the settings with their comments. Expected user mistakes raise `UserError`,
which `run` turns into one line on stderr and exit code 2 instead of a traceback.
`lazy_import("tensorflow")` stands for a module that is imported on first use, so that --help
and mistakes answer before TensorFlow loads; `start_tensorflow()` starts its runtime with its
C++ notices kept quiet, where a script's TensorFlow work begins.
"""
import contextlib
import dataclasses
import difflib
import functools
import importlib
import json
import math
import os
import re
import secrets
import sys
import tempfile


class UserError(Exception):
    """A mistake the user can fix: shown as one line, never as a traceback."""


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _parse_value(name, text, current):
    """Converts `text` to the type of the setting's default."""
    if isinstance(current, bool):  # before int: bool is a subclass of int
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise UserError(f"--{name}={text}: expected True or False")
    for kind, description in ((int, "a whole number"), (float, "a finite number")):
        if isinstance(current, kind):
            try:
                value = kind(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise UserError(f"--{name}={text}: expected {description}, "
                                f"like --{name}={current}") from None
            return value
    return text


def settings_of(namespace):
    """The overridable constants of a namespace: UPPER_CASE names of plain values, except
    those the namespace lists in `_FIXED` (facts such as the image size, not choices)."""
    fixed = namespace.get("_FIXED", ())
    return {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_")
            and k not in fixed and isinstance(v, (bool, int, float, str))}


def check_values(settings, *namespaces):
    """A UserError for the first setting outside what its namespace's `_RANGES` allows: an
    interval such as "[0, 1)" (inf: no bound) or a tuple of the choices."""
    for namespace in namespaces:
        for key, allowed in namespace.get("_RANGES", {}).items():
            value = getattr(settings, key.lower())
            if isinstance(allowed, tuple) and value not in allowed:
                raise UserError(f"--{key.lower()}={value}: choose "
                                f"{', '.join(map(str, allowed[:-1]))} or {allowed[-1]}")
            if isinstance(allowed, str) and not in_interval(value, allowed):
                raise UserError(f"--{key.lower()}={value}: out of range, give a value in "
                                f"{allowed}")


def in_interval(value, interval):
    """Whether a number lies in an interval written as in mathematics: "[1, inf)", "(0, 1]"."""
    opening, low, high, closing = re.fullmatch(r"([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])",
                                               interval).groups()
    low, high = float(low), float(high)
    return ((low <= value if opening == "[" else low < value)
            and (value <= high if closing == "]" else value < high))


def make_settings(values):
    """A frozen dataclass of {lower-case name: value}: read by attribute, changed only by
    making a new one with dataclasses.replace (done once, where main() resolves "auto")."""
    return _settings_class(tuple(values))(**values)


@functools.lru_cache(maxsize=None)
def _settings_class(names):
    """One class per set of names, so that settings of one script compare equal."""
    return dataclasses.make_dataclass("Settings", names, frozen=True)


def defaults(*namespaces):
    """The settings of these namespaces as they stand at the top of their files."""
    return configure(*namespaces, argv=[])


def as_record(settings):
    """{UPPER_CASE name: value}: how run records (best.json) store settings."""
    return {name.upper(): value for name, value in dataclasses.asdict(settings).items()}


def pick(settings, namespace):
    """{lower-case name: value} of the settings that `namespace` (a module's vars()) defines,
    e.g. the sizes that model.build_model takes as keyword arguments."""
    return {name.lower(): getattr(settings, name.lower()) for name in settings_of(namespace)}


def configure(*namespaces, argv=None, positional=None, origins=None):
    """The settings of the given namespaces (a script's globals(), and e.g. vars(model) so that
    train.py also takes the model's sizes; the first namespace wins a shared name), with the
    overrides of the command line `argv` (default: sys.argv[1:]). `-h`/`--help` prints them with
    their comments and exits. Where the namespaces have a SETTINGS setting, a JSON file it
    names (settings_file) is read first and the command line overrides it; `origins`, a dict,
    is then filled with where each setting that is not at its default came from: "command
    line", or the file's path.

    An option is `--name=value` or `--name value`; a True/False setting given alone
    (`--fresh`) means True. Arguments that are not options: with positional=None they are
    refused; with the name of a setting (e.g. "DATA"), one such argument sets it; with "*"
    they are returned too, as `(settings, arguments)` (input files)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(help_text(namespaces, positional))
        sys.exit(0)
    values = {}
    for namespace in reversed(namespaces):
        values.update(settings_of(namespace))
    loose, position, given = [], 0, set()
    while position < len(argv):
        arg = argv[position]
        position += 1
        if not arg.startswith("-") or arg == "-":
            loose.append(arg)
            continue
        name, sep, text = arg.lstrip("-").partition("=")
        key = name.upper()
        if not arg.startswith("--") or key not in values:
            raise UserError(_unknown(arg, values))
        if not sep:  # --name value, or a True/False setting alone
            following = argv[position] if position < len(argv) else None
            if isinstance(values[key], bool) and (following is None or
                                                  following.lower() not in _TRUE + _FALSE):
                text = "true"
            elif following is None or following.startswith("--"):  # the next option, not a value
                raise UserError(f"{arg} needs a value: {arg}=VALUE or {arg} VALUE")
            else:
                text, position = following, position + 1
        values[key] = _parse_value(name, text, values[key])
        given.add(key)
    if values.get("SETTINGS"):
        shell_only = {key for namespace in namespaces
                      for key in namespace.get("_SHELL_ONLY", ())}
        for key, value in settings_file(values["SETTINGS"], values, shell_only).items():
            if key not in given:
                values[key] = value
                if origins is not None:
                    origins[key] = values["SETTINGS"]
    if origins is not None:
        origins.update(dict.fromkeys(sorted(given), "command line"))
    if positional != "*":
        if loose and (positional is None or len(loose) > 1):
            takes = f"only one, the --{positional.lower()} path" if positional else "none"
            raise UserError(f"unexpected argument(s) {' '.join(loose)}: this script takes "
                            f"{takes}; settings are given as --name=value or --name value (--help lists "
                            f"them)")
        if loose:
            values[positional] = loose[0]
            if origins is not None:
                origins[positional] = "command line"
    settings = make_settings({key.lower(): value for key, value in values.items()})
    check_values(settings, *namespaces)  # before anything loads
    return (settings, loose) if positional == "*" else settings


def settings_file(path, known, shell_only=()):
    """{NAME: value} from a JSON file of settings, typed like the `known` ones ({NAME: default}):
    the object itself, or its "settings" member (tune.py's best-settings.json). Plain JSON:
    reading it runs nothing. A UserError names a missing, unreadable or outsized file, a run's
    record, an unknown name, one of the `shell_only` settings (what a run does to its folder is
    the command line's to say) or a value of the wrong kind."""
    try:
        with open(path, "rb") as f:
            text = f.read(1_000_001)
        if len(text) > 1_000_000:
            raise UserError(f"--settings={path}: over 1 MB, not a file of settings")
        content = json.loads(text)
    except FileNotFoundError:
        raise UserError(f"--settings={path}: no such file: give a JSON file of settings, such "
                        f"as tune.py's best-settings.json") from None
    except (OSError, ValueError, RecursionError) as error:
        raise UserError(f"--settings={path}: not a JSON file of settings "
                        f"({type(error).__name__})") from None
    if isinstance(content, dict) and "run_id" in content:
        raise UserError(f"--settings={path} is a training run's record: give a file of "
                        f"settings, such as tune.py's best-settings.json")
    found = content.get("settings", content) if isinstance(content, dict) else None
    if not isinstance(found, dict):
        raise UserError(f"--settings={path}: expected a JSON object of settings, "
                        f'{{"learning_rate": 0.001, ...}} (under "settings" or alone)')
    values = {}
    for name, value in found.items():
        key = str(name).upper()
        if key not in known or key == "SETTINGS":
            raise UserError(f"--settings={path}: {name!r} is not a setting of this script "
                            f"(--help lists them)")
        if key in shell_only:
            raise UserError(f"--settings={path}: --{key.lower()} is given on the command line "
                            f"only: remove it from the file")
        default = known[key]
        expected = type(default) if not isinstance(default, float) else (int, float)
        try:
            fits = (isinstance(value, bool) == isinstance(default, bool)
                    and isinstance(value, expected) and math.isfinite(float(value))
                    if not isinstance(default, str) else isinstance(value, str))
        except OverflowError:
            fits = False
        if not fits:
            raise UserError(f"--settings={path}: {name}={str(value)[:40]!r} should be like "
                            f"{default!r}")
        values[key] = type(default)(value)
    return values


def _unknown(arg, values):
    known = [f"--{key.lower()}" for key in values]
    close = difflib.get_close_matches(arg.split("=")[0], known, n=1)
    hint = f"did you mean {close[0]}?" if close else f"known options: {' '.join(known)}"
    return f"unknown option {arg!r}: {hint} (--help lists every setting)"


def _comments(path):
    """{NAME: comment} from `NAME = value  # comment` lines (and the indented comment lines
    that continue them) in a script's source."""
    comments, last = {}, None
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return comments
    for line in lines:
        assignment = re.match(r"([A-Z][A-Z0-9_]*)\s*=.*?#\s?(.*)$", line)
        continuation = re.match(r"\s+#\s?(.*)$", line)
        if assignment:
            last = assignment.group(1)
            comments[last] = assignment.group(2).strip()
        elif continuation and last:
            comments[last] += " " + continuation.group(1).strip()
        else:
            last = None
    return comments


def help_text(namespaces, positional=None):
    """The script's docstring, then every setting: --name=default and its comment."""
    main = namespaces[0]
    lines = [(main.get("__doc__") or "").strip(), ""]
    if positional and positional != "*":
        lines.append(f"A single argument that is not an option is taken as --{positional.lower()}.")
    lines.append("Settings (override any with --name=value or --name value):")
    seen = set()
    for namespace in namespaces:
        comments = _comments(namespace.get("__file__", ""))
        for key, value in settings_of(namespace).items():
            if key not in seen:
                seen.add(key)
                lines.append(f"  --{key.lower()}={value}".ljust(34) + f" {comments.get(key, '')}")
    return "\n".join(lines)


def run(main):
    """Runs `main()`, turning a UserError into one line on stderr and exit code 2."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # e.g. `--help | head` stopped reading: not the user's error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet exit flush
        sys.exit(1)
    except OSError as error:  # a path under a file, no permission, a full disk: the user's
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}: check that path (and the disk)",
              file=sys.stderr)
        sys.exit(2)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`. If the block succeeds, the file there is flushed
    to the disk and renamed onto `path`, and the rename flushed too: an interrupted write, or a
    power cut after it, never leaves a partial file under the final name."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    tmp = os.path.join(directory, f".{base}.{os.getpid()}-{secrets.token_hex(4)}.tmp{ext}")
    # made as open() makes files, 0666 less the umask (reading the umask means setting it,
    # which would race with other threads' files)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        flush_to_disk(tmp)
        os.replace(tmp, path)
        flush_to_disk(directory)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def flush_to_disk(path):
    """fsync a file, or a folder's entries (where the system allows it: not on Windows)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def lazy_import(name):
    """A module imported on first use: `tf = lazy_import("tensorflow")` at the top of a script
    reads like an import, but TensorFlow (seconds of start-up) loads only when the work first
    touches `tf.something`, after the settings and inputs are checked, so that --help and a
    user's mistake answer at once. Its C++ start-up lines are kept quiet (quiet_native_stderr)."""
    return _LazyModule(name)


def start_tensorflow():
    """Starts TensorFlow's runtime with its C++ notices (no GPU driver, and so on) kept quiet:
    called where a script's TensorFlow work begins, once its inputs are checked."""
    with quiet_native_stderr():
        importlib.import_module("tensorflow").config.list_logical_devices()


class _LazyModule:
    def __init__(self, name):
        self._name, self._module = name, None

    def __getattr__(self, attribute):
        if self._module is None:
            with quiet_native_stderr():
                self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)

    def __repr__(self):
        return f"<module {self._name!r}, {'loaded' if self._module else 'loaded on first use'}>"


@contextlib.contextmanager
def quiet_native_stderr():
    """TensorFlow 2.21 prints C++ start-up lines (oneDNN notice, missing CUDA drivers) that
    ignore TF_CPP_MIN_LOG_LEVEL and would bury a one-line error. Wrap its import and device
    start-up in this: their stderr goes to a temporary file, replayed only if they fail."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
