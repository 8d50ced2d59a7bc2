"""Output paths that never destroy the user's data, and a video found only
where it is safe to look. Standard library only: used by the worker, the
headless commands and the add-on.

Rules (every command follows them before it does any work):

* An output is refused when it is one of the command's inputs: the same
  path, or the same file through a hard link or a symbolic link (compared by
  device and inode, ``os.path.samefile``, and by resolved path for files that
  do not exist yet). Two outputs that are the same file are refused too.
* An output that exists and is not a regular file (a folder, a FIFO, a
  device such as ``/dev/full``, a socket) is refused: renaming over it would
  replace the node itself.
* The folder of an output must exist and be writable, or be creatable (its
  nearest existing ancestor a writable folder).
* Outputs are written to a temporary name in the same folder and renamed
  into place (:func:`atomic_output`), so a failure never leaves half a file
  where a good one was.

Refusals are :class:`PathRefused` with the exit code to use: 2 (bad
arguments) for an output over an input or over something that is not a
regular file, 6 (cannot write) for a folder that cannot be written.
"""
import contextlib
import os
import secrets
import stat

from .exitcodes import EXIT_USAGE, EXIT_WRITE

TEMP_PREFIX = ".tmp-"


class PathRefused(ValueError):
    """An output path that must not be written; ``code`` is the exit code."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _resolved(path):
    return os.path.normcase(os.path.realpath(os.path.abspath(os.fspath(path))))


def same_file(a, b):
    """True when paths `a` and `b` name one file: the same inode (hard and
    symbolic links included) or, for files that do not exist yet, the same
    resolved path."""
    try:
        if os.path.samefile(a, b):
            return True
    except (OSError, ValueError):
        pass
    try:
        return _resolved(a) == _resolved(b)
    except (OSError, ValueError):
        return False


def _kind(mode):
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_not_special(label, path):
    """Refuse an existing `path` that is not a regular file (following a
    symbolic link: a link to a device is refused too)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there, or a dangling link (the rename replaces the link only)
    except OSError as exc:
        raise PathRefused(f"{label} '{path}' cannot be examined ({exc.strerror or exc})",
                          EXIT_WRITE) from None
    if not stat.S_ISREG(st.st_mode):
        raise PathRefused(f"{label} '{path}' exists and is {_kind(st.st_mode)}, not a regular "
                          "file: refusing to replace it", EXIT_USAGE)


def check_folder(label, folder):
    """The folder exists and is writable, or can be created."""
    folder = os.path.abspath(os.fspath(folder) or ".")
    probe = folder
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise PathRefused(f"{label}: '{probe}' is not a folder, so '{folder}' cannot be "
                          "created", EXIT_WRITE)
    # access() knows permissions, ACLs and read-only mounts (even for root);
    # nothing is written here, so checking changes nothing on disk
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe != folder:
            raise PathRefused(f"{label}: the folder '{folder}' cannot be created ('{probe}' "
                              "is not writable)", EXIT_WRITE)
        raise PathRefused(f"{label}: the folder '{folder}' is not writable", EXIT_WRITE)


def check_outputs(outputs, inputs=()):
    """Check every output before any work. `outputs` and `inputs` are
    (label, path) pairs; empty paths are skipped. Raises PathRefused."""
    ins = [(label, os.fspath(p)) for label, p in inputs if p]
    outs = [(label, os.fspath(p)) for label, p in outputs if p]
    for i, (label, path) in enumerate(outs):
        for in_label, in_path in ins:
            if same_file(path, in_path):
                what = "is" if _resolved(path) == _resolved(in_path) else "is the same file as"
                raise PathRefused(f"{label} '{path}' {what} the {in_label} '{in_path}': "
                                  "refusing to write over an input", EXIT_USAGE)
        for other_label, other in outs[:i]:
            if same_file(path, other):
                raise PathRefused(f"{label} '{path}' and {other_label} '{other}' are the same "
                                  "file: give them different names", EXIT_USAGE)
        check_not_special(label, path)
        check_folder(label, os.path.dirname(os.path.abspath(path)))


def temporary_sibling(path):
    """A fresh name beside `path` (same folder, so a rename is atomic) that
    ends like `path`, for writers that insist on the extension. Not created."""
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    while True:
        tmp = os.path.join(folder, f"{TEMP_PREFIX}{secrets.token_hex(6)}-{base}")
        if not os.path.lexists(tmp):
            return tmp


@contextlib.contextmanager
def atomic_output(path, label="output"):
    """Write `path` through a temporary file beside it: yields the temporary
    path for the writer; when the block ends without an exception, the
    temporary file replaces `path` (``os.replace``); otherwise it is removed
    and `path` is untouched. The folder is created when missing."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        if not os.path.isfile(tmp):
            raise OSError(f"nothing was written for {os.path.basename(path)}")
        check_not_special(label, path)  # again: it may have appeared meanwhile
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(tmp, 0o666 & ~umask)
        except OSError:
            pass
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_text_atomic(path, text, label="output"):
    with atomic_output(path, label) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return os.path.abspath(path)


def video_beside(result_path, source):
    """The video a result was made from, looked for only beside the result
    file. `source` is the result's display name: only its last path
    component is used, so ``../../etc/passwd`` or an absolute path in a file
    never leads out of the result's folder. Returns the path of an existing
    regular file or folder (an image sequence) of that name, else None."""
    name = str(source or "").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if name in ("", ".", "..") or "\x00" in name:
        return None
    folder = os.path.dirname(os.path.abspath(os.fspath(result_path)))
    path = os.path.join(folder, name)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) or same_file(path, result_path):
        return None
    return path


def inputs_of(args):
    """(label, path) of every input a command line (parsed `args`) reads,
    by the option names the commands share."""
    names = (("result", "result"), ("video", "video"), ("smpl_model", "--smpl-model"),
             ("checkpoint", "--checkpoint"), ("kid_template", "--kid-template"),
             ("worker_python", "--worker-python"), ("take", "take"), ("target", "--target"),
             ("bone_map", "--bone-map"))
    out = [(label, getattr(args, key, None)) for key, label in names]
    if getattr(args, "command", "") == "capture":  # its result is an output first
        out = [(label, p) for label, p in out if label != "result"]
    return [(label, p) for label, p in out if p]
