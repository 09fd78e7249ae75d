"""Folders of class subfolders of images, read as training data: each image framed into the
56x56 binary format as predict.py frames a file, by framing_numpy.py (framing.py's framing to
the bit, several times faster an image).

A big folder is framed in chunks of CHUNK_FILES images, by one worker process per CPU core
(at most MAX_WORKERS), with a progress bar on a terminal (a line every LOG_EVERY images in a
log). Each framed chunk is kept, as packed bits, in a folder beside the prepared splits named by
the image folder's fingerprint: a run killed while framing continues where it stopped, and a
split with another seed reuses the framing.
"""
import hashlib
import os
import signal
import sys
import threading
import time

import numpy as np

from common import UserError, atomic_path, quiet_native_stderr
import data_format

FOLDER_FORMAT = "folder-v2"  # hashed with a folder's files: bump when the framing changes
                             # (framing.py, and framing_numpy.py with it)
CHUNK_FILES = 500         # images framed, and kept, at a time: what a kill can lose
MAX_WORKERS = 8           # framing processes at most: each holds TensorFlow (for the resize),
                          # and a photo of 40 megapixels while it frames it
LOG_EVERY = 2000          # without a terminal, a progress line every this many images
FRAMED, UNREADABLE, BLANK = 0, 1, 2  # what became of each file
STATUSES = (FRAMED, UNREADABLE, BLANK)


def folder_classes(folder):
    """(class names, [(label, path)]) of a folder of class subfolders (hidden files and
    folders left out), with a clear error for a folder that is not laid out that way."""
    subfolders = sorted(entry.name for entry in os.scandir(folder)
                        if entry.is_dir() and not entry.name.startswith("."))
    if len(subfolders) < 2:
        only = f": {subfolders[0]}" if subfolders else ""
        raise UserError(f"{folder} has {len(subfolders) or 'no'} class subfolder"
                        f"{'' if len(subfolders) == 1 else 's'}{only}"
                        f": an image folder holds one subfolder per class (at least 2), named "
                        f"by the class, like {os.path.join(folder, 'A', '1.png')}")
    files = []
    for label, name in enumerate(subfolders):
        found = []
        for root, folders, file_names in os.walk(os.path.join(folder, name)):
            folders[:] = sorted(entry for entry in folders if not entry.startswith("."))
            found.extend(os.path.join(root, file) for file in sorted(file_names)
                         if not file.startswith(".")  # and no pipes, devices or sockets
                         and os.path.isfile(os.path.join(root, file)))
        if not found:
            raise UserError(f"{os.path.join(folder, name)} holds no files: put the class's "
                            f"images in it, or remove it")
        files.extend((label, path) for path in found)
    return subfolders, files


def folder_sha256(folder, files):
    """The fingerprint of an image folder: every file's path in it and its contents, so that
    an added, removed, renamed or changed image makes a new split."""
    sha = hashlib.sha256(FOLDER_FORMAT.encode())
    for _, path in files:
        content = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                content.update(block)
        sha.update(relative(path, folder).encode() + b"\0" + content.digest())
    return sha.hexdigest()


def relative(path, folder):
    return os.path.relpath(path, folder).replace(os.sep, "/")


def refuse_empty_classes(folder, names, labels):
    """A clear error for the first class that none of `labels` (of its usable images) has."""
    present = set(labels)
    empty = [name for label, name in enumerate(names) if label not in present]
    if empty:
        raise UserError(f"{os.path.join(folder, empty[0])} holds no readable image with ink: "
                        f"check its files")


# ---------------------------------------------------------------------------- framing

def frame_files(paths):
    """(N x 3136 uint8 pixels, N statuses) of image files, decoded as predict.py decodes them
    and framed by framing_numpy: FRAMED, UNREADABLE (not an image that decodes) or BLANK (no
    ink; its pixels all 0)."""
    import framing  # (TensorFlow: loaded only when images are framed)
    import framing_numpy
    pixels = np.zeros((len(paths), framing.SIDE * framing.SIDE), np.uint8)
    status = np.full(len(paths), FRAMED, np.int8)
    for row, path in enumerate(paths):
        try:
            with open(path, "rb") as f:
                raw = f.read()
            pixels[row] = framing.read_image_file(raw, path, framer=framing_numpy.frame)
        except (OSError, UserError):  # (OSError: gone, or unreadable, since it was listed)
            status[row] = UNREADABLE
            continue
        if not pixels[row].any():
            status[row] = BLANK
    return pixels, status


def start_worker():
    """A framing process: Ctrl-C is for the parent to handle, it ends when its parent does
    (killed, even with -9), and TensorFlow (the resize's small matrix products) runs on this
    one thread, on the CPU, as numpy does: one process per core keeps every core busy, without
    pools of threads competing for them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def end_with_parent():  # an orphan is handed to another parent
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)
    threading.Thread(target=end_with_parent, daemon=True).start()
    with quiet_native_stderr():  # (its start-up notices, as common.start_tensorflow's)
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.set_visible_devices([], "GPU")  # several processes would fight over one
        tf.config.list_logical_devices()


def chunk_path(work_dir, number):
    return os.path.join(work_dir, f"chunk-{number:05d}.npz")


def kept_chunk(work_dir, number, names):
    """(pixels, status) of a chunk framed before, if its file is whole and of these files;
    None for anything else (absent, torn by a kill, of other files, not ours), framed again."""
    try:
        with np.load(chunk_path(work_dir, number)) as saved:  # (never a pickle)
            files, packed, status = saved["files"], saved["pixels"], saved["status"]
    except Exception:  # noqa: BLE001 (a torn zip, a foreign file: whatever it is, not kept)
        return None
    side = data_format.SIDE * data_format.SIDE // 8  # (8 pixels a byte)
    whole = (files.tolist() == names and packed.dtype == np.uint8
             and packed.shape == (len(names), side) and status.dtype == np.int8
             and status.shape == (len(names),) and np.isin(status, STATUSES).all())
    return (np.unpackbits(packed, axis=1), status) if whole else None


def keep_chunk(work_dir, number, names, pixels, status):
    """Writes a framed chunk (atomically). Keeping it only spares work later: a failure is a
    warning, not the end of the framing."""
    try:
        with atomic_path(chunk_path(work_dir, number)) as tmp:
            np.savez(tmp, files=np.array(names), pixels=np.packbits(pixels, axis=1),
                     status=status)
    except OSError as error:
        print(f"warning: could not keep framed images in {work_dir} ({error.strerror or error})"
              f": a run stopped now frames them again", file=sys.stderr)


class Progress:
    """A bar on a terminal, a line every LOG_EVERY images otherwise, nothing if not verbose."""

    def __init__(self, folder, total, done, verbose):
        import tqdm
        self.folder, self.total, self.done, self.verbose = folder, total, done, verbose
        self.logged, self.started, self.first = done, time.monotonic(), done
        terminal = verbose and sys.stderr.isatty()
        self.bar = tqdm.tqdm(total=total, initial=done, unit="image", disable=not terminal,
                             desc=f"framing {folder}", dynamic_ncols=True)
        self.lines = verbose and not terminal
        if verbose and done:
            print(f"framing {folder}: {done:,} of {total:,} images framed before, framing the "
                  f"rest", flush=True)

    def advance(self, count):
        self.done += count
        self.bar.update(count)
        if self.lines and (self.done - self.logged >= LOG_EVERY or self.done == self.total):
            self.logged = self.done
            rate = (self.done - self.first) / max(time.monotonic() - self.started, 1e-9)
            print(f"framed {self.done:,} of {self.total:,} images of {self.folder} "
                  f"({100 * self.done // self.total}%), {rate:.0f} a second", flush=True)

    def close(self):
        self.bar.close()


def frame_chunks(chunks, names, work_dir, progress, workers):
    """{chunk number: (pixels, status)} for `chunks` ({number: paths}, `names` their files'
    names), each kept in `work_dir` as soon as it is framed: by `workers` processes, or here
    when there is one."""
    framed = {}

    def keep(number, result):
        keep_chunk(work_dir, number, names[number], *result)
        framed[number] = result
        progress.advance(len(chunks[number]))

    if workers <= 1 or len(chunks) <= 1:
        for number, paths in chunks.items():
            keep(number, frame_files(paths))
        return framed
    import concurrent.futures
    import multiprocessing
    # (spawned, not forked: a fork of a process that runs TensorFlow can hang)
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn"),
        initializer=start_worker)
    try:
        futures = {pool.submit(frame_files, paths): number for number, paths in chunks.items()}
        for future in concurrent.futures.as_completed(futures):
            number = futures[future]
            try:
                result = future.result()
            except concurrent.futures.process.BrokenProcessPool:
                raise UserError(
                    f"a process framing {progress.folder} stopped (out of memory, or killed) "
                    f"while framing {names[number][0]} to {names[number][-1]}: check those "
                    f"files and the memory free; the images framed so far are kept") from None
            keep(number, result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return framed


def read_image_folder(folder, names, files, work_dir, verbose=True, workers=None,
                      chunk_files=CHUNK_FILES):
    """(x N x 3136, y, the files of the rows: paths under the folder) from the (label, path)
    image files of a folder: each framed as predict.py frames a file (framing_numpy), in chunks
    kept in `work_dir` (framed before: read back) by `workers` processes (None: one per CPU
    core, at most MAX_WORKERS). Files that are not readable images, or hold no ink, are
    skipped with a warning that names them; a class left with no image is refused."""
    from PIL import Image, UnidentifiedImageError
    unreadable = []
    for _, path in files:  # first the files' headers: a class of no images answers at once
        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError):
            unreadable.append(path)
    skip = set(unreadable)
    opened = [(label, path) for label, path in files if path not in skip]
    refuse_empty_classes(folder, names, [label for label, _ in opened])

    paths = [path for _, path in opened]
    starts = range(0, len(paths), chunk_files)
    chunks = {number: paths[start:start + chunk_files] for number, start in enumerate(starts)}
    chunk_names = {number: [relative(path, folder) for path in chunk]
                   for number, chunk in chunks.items()}
    framed = {}
    for number in chunks:
        saved = kept_chunk(work_dir, number, chunk_names[number])
        if saved is not None:
            framed[number] = saved
    progress = Progress(folder, len(paths), sum(len(chunks[n]) for n in framed), verbose)
    try:
        framed.update(frame_chunks({n: chunk for n, chunk in chunks.items() if n not in framed},
                                   chunk_names, work_dir, progress,
                                   workers or min(cpu_cores(), MAX_WORKERS)))
    finally:
        progress.close()
    pixels = np.concatenate([framed[n][0] for n in sorted(chunks)])
    status = np.concatenate([framed[n][1] for n in sorted(chunks)])

    good = status == FRAMED
    labels = np.array([label for label, _ in opened], np.int64)
    refuse_empty_classes(folder, names, labels[good].tolist())
    unreadable += [path for path, code in zip(paths, status) if code == UNREADABLE]
    blank = [path for path, code in zip(paths, status) if code == BLANK]
    for problem, skipped in (("not a readable image", unreadable), ("blank (no ink)", blank)):
        if skipped:
            shown = ", ".join(relative(path, folder) for path in skipped[:5]) + (
                f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
            print(f"warning: skipped {len(skipped)} file(s) of {folder}, each {problem}: "
                  f"{shown}", file=sys.stderr)
    kept = [relative(path, folder) for path, ok in zip(paths, good) if ok]
    return pixels[good], labels[good], kept


def cpu_cores():
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def work_dir_of(prepared_dir, sha):
    """The folder that keeps the framed chunks of the image folder of this sha256."""
    return os.path.join(prepared_dir, f"framed-{sha[:16]}")
