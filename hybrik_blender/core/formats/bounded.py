"""Bounded reading of untrusted files: regular files, zip archives, ``.npy``
members.

Every reader of a file a user hands us (results, body models, checkpoints,
templates) goes through here, so that no file can make us allocate more than
it is allowed to say it holds, or block on a FIFO. The rules, each checked
before anything of that size is allocated:

* **Regular files only.** A path is opened with ``O_NONBLOCK`` and checked
  with ``fstat``: FIFOs, sockets and devices are refused before one byte is
  read (a FIFO would block forever, ``/dev/zero`` never ends).
* **Zip archives.** The end-of-central-directory record is read first: more
  than :data:`MAX_ZIP_MEMBERS` entries, or a central directory larger than
  :data:`MAX_CENTRAL_DIRECTORY`, is refused before ``zipfile`` parses it.
  Duplicate member names (two different contents under one name) are
  refused. Only stored and deflated members are read (bzip2 and lzma cannot
  be decompressed with a bound in ``zipfile``); encrypted members are refused.
* **Members.** A member is read only when asked for, and only after its
  *declared* uncompressed size is checked against the caller's limit.
  ``zipfile`` never inflates past the declared size (and checks the CRC at the
  end), so the declared size bounds the memory. A deflated member larger than
  :data:`RATIO_FLOOR` that inflates more than :data:`MAX_RATIO` times its
  compressed size is refused as a zip bomb.
* **.npy members.** The header (at most :data:`MAX_NPY_HEADER` bytes) is
  parsed first; object, structured and sub-array dtypes are refused (no
  pickle is ever run), and the declared shape must account for exactly the
  member's declared size, so a huge shape in a small member is refused
  before anything is allocated.

Limits raise :class:`LimitError`, damaged archives :class:`ArchiveError`
(both ValueErrors with a one-line message); callers turn them into their own
error types.
"""
import os
import stat
import struct
import zipfile

import numpy as np

MAX_ZIP_MEMBERS = 1 << 16          # a HybrIK-X checkpoint has ~4,000
MAX_CENTRAL_DIRECTORY = 32 << 20   # bytes
MAX_NPY_HEADER = 10000             # numpy's own default
MAX_RATIO = 200                    # inflated / compressed, for members above RATIO_FLOOR
RATIO_FLOOR = 64 << 20
MAX_NDIM = 8
_CHUNK = 1 << 20


class LimitError(ValueError):
    """The file is past one of the documented limits."""


class ArchiveError(ValueError):
    """The archive or array is damaged or inconsistent."""


def one_line(text, limit=400):
    """`text` as one printable line: control characters (newlines, escapes)
    shown escaped, cut at `limit` characters."""
    text = str(text)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def size_text(nbytes):
    """A byte count for messages: '12 bytes', '3.4 MiB', '745.1 GiB'."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.1f} {unit}"
    return f"{nbytes} bytes"


def shown(name, limit=60):
    """A name taken from a file, safe to put in a message."""
    return one_line(name, limit)


def open_regular(path, what="file"):
    """Open `path` for reading; refuse anything that is not a regular file
    (without blocking on a FIFO). Returns a binary file object; OSError when
    it cannot be opened."""
    path = os.fspath(path)
    name = shown(os.path.basename(path) or path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise LimitError(f"'{name}' is a folder, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise LimitError(f"'{name}' is not a regular file (a FIFO, socket or device); "
                             f"refused as a {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path, what="file"):
    """os.stat_result of a regular file; LimitError for FIFOs, devices, ..."""
    with open_regular(path, what) as fh:
        return os.fstat(fh.fileno())


def read_bounded(fh, nbytes, what="data"):
    """Exactly `nbytes` from `fh` into a writable bytearray, in chunks (no
    second copy); ArchiveError when the stream ends early."""
    buf = bytearray(nbytes)
    view = memoryview(buf)
    pos = 0
    while pos < nbytes:
        chunk = fh.read(min(_CHUNK, nbytes - pos))
        if not chunk:
            raise ArchiveError(f"{what} is truncated ({pos} of {nbytes} bytes)")
        view[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    return buf


def read_file(path, max_bytes, what="file"):
    """The whole of a regular file, refused when larger than `max_bytes`."""
    with open_regular(path, what) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            raise LimitError(f"'{shown(os.path.basename(os.fspath(path)))}' is "
                             f"{size / 2**20:.0f} MiB; a {what} is at most "
                             f"{max_bytes / 2**20:.0f} MiB")
        return bytes(read_bounded(fh, size, what))


# --- zip archives ----------------------------------------------------------------

def _zip_entry_count(fh):
    """(entries, central directory size) from the end records, read before
    zipfile parses the directory."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    tail = min(size, zipfile.sizeEndCentDir + 0xFFFF)
    fh.seek(size - tail)
    data = fh.read(tail)
    pos = data.rfind(zipfile.stringEndArchive)
    if pos < 0 or len(data) - pos < zipfile.sizeEndCentDir:
        raise ArchiveError("no end-of-directory record")
    rec = struct.unpack(zipfile.structEndArchive, data[pos:pos + zipfile.sizeEndCentDir])
    entries, cd_size = rec[4], rec[5]
    loc = pos - zipfile.sizeEndCentDir64Locator
    if loc >= 0 and data[loc:loc + 4] == zipfile.stringEndArchive64Locator:
        _, _, offset64, _ = struct.unpack(zipfile.structEndArchive64Locator,
                                          data[loc:loc + zipfile.sizeEndCentDir64Locator])
        start = size - tail
        if start <= offset64 <= size - zipfile.sizeEndCentDir64:
            rec64 = data[offset64 - start:offset64 - start + zipfile.sizeEndCentDir64]
        elif offset64 <= size - zipfile.sizeEndCentDir64:
            fh.seek(offset64)
            rec64 = fh.read(zipfile.sizeEndCentDir64)
        else:
            raise ArchiveError("damaged zip64 end record")
        if len(rec64) != zipfile.sizeEndCentDir64 or rec64[:4] != zipfile.stringEndArchive64:
            raise ArchiveError("damaged zip64 end record")
        rec64 = struct.unpack(zipfile.structEndArchive64, rec64)
        entries, cd_size = rec64[7], rec64[8]
    return entries, cd_size


class BoundedZip:
    """A zip archive opened under the limits of this module (see there).

    ``names`` lists the members; :meth:`read` and :meth:`read_npy` read one,
    each with a byte limit."""

    def __init__(self, path, name=None, max_members=MAX_ZIP_MEMBERS, what="zip archive"):
        self.name = shown(name or os.path.basename(os.fspath(path)))
        self._fh = open_regular(path, what)
        try:
            try:
                entries, cd_size = _zip_entry_count(self._fh)
            except (ArchiveError, struct.error, OSError) as exc:
                raise ArchiveError(f"'{self.name}' is a damaged or truncated archive "
                                   f"({one_line(exc, 80)})") from None
            if entries > max_members:
                raise LimitError(f"'{self.name}' lists {entries} members; at most "
                                 f"{max_members} are read")
            if cd_size > MAX_CENTRAL_DIRECTORY:
                raise LimitError(f"'{self.name}' has a {cd_size / 2**20:.0f} MiB zip directory; "
                                 f"at most {MAX_CENTRAL_DIRECTORY >> 20} MiB")
            self._fh.seek(0)
            try:
                self.zf = zipfile.ZipFile(self._fh)
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - zipfile on hostile bytes raises anything
                raise ArchiveError(f"'{self.name}' is a damaged or truncated archive "
                                   f"({one_line(exc, 80)})") from None
            names = self.zf.namelist()
            if len(names) > max_members:
                raise LimitError(f"'{self.name}' lists {len(names)} members; at most "
                                 f"{max_members} are read")
            if len(set(names)) != len(names):
                seen, dup = set(), None
                for n in names:
                    if n in seen:
                        dup = n
                        break
                    seen.add(n)
                raise ArchiveError(f"'{self.name}' holds member '{shown(dup)}' twice; "
                                   "refused as ambiguous")
            self.names = names
        except BaseException:
            self._fh.close()
            raise

    def close(self):
        try:
            self.zf.close()
        except AttributeError:
            pass
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def info(self, member, max_bytes):
        """The ZipInfo of `member` after the size, ratio and method checks."""
        try:
            info = self.zf.getinfo(member)
        except KeyError:
            raise ArchiveError(f"'{self.name}' has no member '{shown(member)}'") from None
        what = f"'{self.name}': member '{shown(member)}'"
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{what} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise LimitError(f"{what} uses compression method {info.compress_type}; only "
                             "stored and deflated members are read")
        if info.file_size > max_bytes:
            raise LimitError(f"{what} declares {size_text(info.file_size)}; at most "
                             f"{size_text(max_bytes)} are read")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise ArchiveError(f"{what} is stored with inconsistent sizes")
        if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > RATIO_FLOOR \
                and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise LimitError(f"{what} inflates {info.file_size // max(info.compress_size, 1)}"
                             f" times (a zip bomb?); at most {MAX_RATIO} times above "
                             f"{RATIO_FLOOR >> 20} MiB")
        return info

    def _open(self, info):
        try:
            return self.zf.open(info)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile on hostile bytes raises anything
            raise ArchiveError(f"'{self.name}': member '{shown(info.filename)}' is damaged "
                               f"({one_line(exc, 80)})") from None

    def read(self, member, max_bytes, nbytes=None):
        """The bytes of `member` (its first `nbytes` when given), refused when
        it declares more than `max_bytes`."""
        info = self.info(member, max_bytes)
        n = info.file_size if nbytes is None else int(nbytes)
        if n > info.file_size:
            raise ArchiveError(f"'{self.name}': member '{shown(member)}' holds "
                               f"{info.file_size} bytes, {n} are needed")
        with self._open(info) as fh:
            return self._guard(read_bounded, fh, n, f"'{self.name}': member '{shown(member)}'")

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except (ArchiveError, LimitError):
            raise
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile on hostile bytes raises anything
            raise ArchiveError(f"'{self.name}' is damaged or truncated "
                               f"({one_line(exc, 80)})") from None

    def npy_header(self, member, max_bytes, kinds="biuf"):
        """(shape, fortran_order, dtype) of a ``.npy`` member from its header
        alone, checked (see the module docstring)."""
        info = self.info(member, max_bytes)
        with self._open(info) as fh:
            return self._guard(self._header, fh, info, kinds)[:3]

    def _header(self, fh, info, kinds, what=None):
        what = what or f"'{self.name}': '{shown(info.filename.removesuffix('.npy'))}'"
        try:
            version = np.lib.format.read_magic(fh)
            shape, fortran, dtype = np.lib.format._read_array_header(
                fh, version, max_header_size=MAX_NPY_HEADER)
        except (ValueError, SyntaxError, TypeError, OverflowError, MemoryError,
                RecursionError, UnicodeDecodeError) as exc:
            raise ArchiveError(f"{what} is not a readable .npy array "
                               f"({one_line(exc, 80)})") from None
        start = fh.tell()
        if dtype.hasobject:
            raise ArchiveError(f"{what} holds Python objects, which are never loaded")
        if dtype.fields is not None or dtype.subdtype is not None:
            raise ArchiveError(f"{what} has a structured dtype ({shown(dtype.str)})")
        if dtype.kind not in kinds:
            raise ArchiveError(f"{what} has dtype {shown(dtype.str)}")
        if len(shape) > MAX_NDIM or any(not isinstance(s, int) or s < 0 for s in shape):
            raise ArchiveError(f"{what} declares the shape {shown(shape)}")
        nbytes = dtype.itemsize
        for s in shape:
            nbytes *= s
        if start + nbytes != info.file_size:
            raise ArchiveError(f"{what} declares {shown(shape)} {dtype} ({size_text(nbytes)}) "
                               f"but holds {size_text(info.file_size - start)}")
        return shape, bool(fortran), dtype, nbytes

    def read_npy(self, member, max_bytes, kinds="biuf", check=None):
        """A ``.npy`` member as a writable array, its header checked before
        its data is read; `check(shape, dtype)` may refuse it first."""
        info = self.info(member, max_bytes)
        with self._open(info) as fh:
            shape, fortran, dtype, nbytes = self._guard(self._header, fh, info, kinds)
            if check is not None:
                check(shape, dtype)
            buf = self._guard(read_bounded, fh, nbytes,
                              f"'{self.name}': '{shown(member)}'")
            # read to the end, so zipfile checks the CRC
            if self._guard(fh.read, 1):
                raise ArchiveError(f"'{self.name}': '{shown(member)}' is longer than declared")
        arr = np.frombuffer(buf, dtype=dtype)
        return arr.reshape(shape, order="F" if fortran else "C")


def npz_members(zf):
    """{key: member name} of the ``.npy`` members of an ``.npz``."""
    return {n[:-4]: n for n in zf.names if n.endswith(".npy")}


def read_npy_file(path, max_bytes, kinds="biuf", check=None, what=".npy array"):
    """A standalone ``.npy`` file, with the same checks as an archive member."""
    name = shown(os.path.basename(os.fspath(path)))
    with open_regular(path, what) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes + MAX_NPY_HEADER + 16:
            raise LimitError(f"'{name}' is {size / 2**20:.0f} MiB; a {what} is at most "
                             f"{max_bytes / 2**20:.0f} MiB")
        info = zipfile.ZipInfo(name)
        info.file_size = size
        holder = BoundedZip.__new__(BoundedZip)
        holder.name = name
        shape, fortran, dtype, nbytes = holder._guard(holder._header, fh, info, kinds,
                                                      f"'{name}'")
        if check is not None:
            check(shape, dtype)
        buf = holder._guard(read_bounded, fh, nbytes, f"'{name}'")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")
