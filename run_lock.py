"""One training run per folder: the run holds an OS file lock on --out_dir/.lock while it
trains, so a second run there is refused at once, naming the first.
"""
import contextlib
import datetime
import os
import socket
import sys

from common import UserError

LOCK = ".lock"  # held (an OS file lock) by the run training in a folder


@contextlib.contextmanager
def claim(out_dir, name=LOCK, what="training run"):
    """Holds an exclusive OS lock (flock) on out_dir/`name` for the block: a second claim there
    is refused at once, naming the first. The lock dies with its process, so a killed run's
    folder is free at once. (Without fcntl, on Windows, runs are not locked.) `what` holds it,
    for the refusal."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = os.path.join(out_dir, name)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by another process
            holder = os.read(descriptor, 500).decode(errors="replace").strip() or "starting"
            os.close(descriptor)
            raise UserError(f"{out_dir} is in use by another {what} ({holder}): wait "
                            f"for it to end or stop it, or choose another --out_dir") from None
        try:  # a run that ended removed the file it locked: lock the one at `path` now
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(descriptor)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}, started {started}: "
                         f"{' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:300]}"
             .encode())
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)  # while still held: a run waiting on it then locks a new file
        os.close(descriptor)


def held(out_dir, name=LOCK):
    """Whether a live process holds out_dir/`name` now (False where runs are not locked)."""
    try:
        import fcntl
        descriptor = os.open(os.path.join(out_dir, name), os.O_RDONLY)
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(descriptor)
