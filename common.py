"""Small helpers shared by every script: shell overrides, help, clean errors, atomic writes.

Each script keeps its settings as UPPER_CASE constants at the top and calls
`configure(globals())`, so `python train.py --epochs=5 --augment=False` overrides EPOCHS and
AUGMENT with values of the same type, and `python train.py --help` lists them with their
comments. Expected user mistakes raise `UserError`, which `run` turns into one line on stderr
and exit code 2 instead of a traceback.
"""
import contextlib
import os
import re
import sys
import tempfile


class UserError(Exception):
    """A mistake the user can fix: shown as one line, never as a traceback."""


def _parse_value(name, text, current):
    """Converts `text` to the type of the constant's current value."""
    if isinstance(current, bool):  # before int: bool is a subclass of int
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise UserError(f"--{name}={text}: expected True or False")
    for kind, description in ((int, "a whole number"), (float, "a number")):
        if isinstance(current, kind):
            try:
                return kind(text)
            except ValueError:
                raise UserError(f"--{name}={text}: expected {description}, "
                                f"like --{name}={current}") from None
    return text


def configure(*namespaces, argv=None, positional=None):
    """Applies `--name=value` overrides to the UPPER_CASE constants of the given namespaces (a
    script's globals(), and e.g. vars(model) so that train.py can set the model's sizes).
    `-h`/`--help` prints the settings with their comments and exits.

    Arguments that are not options: with positional=None they are refused; with the name of a
    setting (e.g. "DATA"), one such argument sets it; with "*" they are returned (input files)."""
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(help_text(namespaces, positional))
        sys.exit(0)
    owners = {}
    for namespace in reversed(namespaces):  # the first namespace wins a shared name
        owners.update({key: namespace for key in settings_of(namespace)})
    loose = []
    for arg in argv:
        if not arg.startswith("--"):
            loose.append(arg)
            continue
        name, sep, text = arg[2:].partition("=")
        key = name.upper()
        if not sep or key not in owners:
            known = " ".join(f"--{k.lower()}" for k in owners)
            raise UserError(f"unknown option {arg!r}: use --name=value with one of: {known}")
        owners[key][key] = _parse_value(name, text, owners[key][key])
    if positional == "*":
        return loose
    if loose and (positional is None or len(loose) > 1):
        takes = f"only one, the --{positional.lower()} path" if positional else "none"
        raise UserError(f"unexpected argument(s) {' '.join(loose)}: this script takes {takes}; "
                        f"settings are given as --name=value (--help lists them)")
    if loose:
        owners[positional][positional] = loose[0]
    return []


def settings_of(namespace):
    """The overridable constants of a namespace: UPPER_CASE names of plain values, except
    those the namespace lists in `_FIXED` (facts such as the image size, not choices)."""
    fixed = namespace.get("_FIXED", ())
    return {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_")
            and k not in fixed and isinstance(v, (bool, int, float, str))}


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
    lines.append("Settings (override any with --name=value):")
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


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` only if the block
    succeeds, so an interrupted write never leaves a partial file under the final name."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


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
