"""Restricted, bounded unpicklers for SMPL model pickles and torch zip
checkpoints.

Official SMPL ``.pkl`` files are Python-2 pickles whose arrays are wrapped in
chumpy objects, with the joint regressor as a scipy sparse matrix. Neither
chumpy nor scipy is needed (or trusted) here: every global the pickle asks for
is checked against an allow-list. numpy's array reconstruction (protocols 0
to 5) is admitted through our own builders, which never call numpy's
unpickling code: they check the dtype, shape and byte count, then build the
array from the bytes; chumpy and scipy.sparse classes become inert stand-ins
that only record their state; anything else (``os.system``,
``subprocess.Popen``, ``builtins.eval`` ...) raises :class:`UnsafePickleError`
before any object is built.

Limits
------
A pickle is scanned opcode by opcode *before* it is unpickled
(:func:`scan_pickle`), with a model of the unpickler's stack and memo:

* at most :data:`MAX_OPCODES` opcodes (:data:`MAX_CHECKPOINT_OPCODES` for a
  checkpoint's ``data.pkl``), :data:`MAX_MARKS` nested marks and
  memo indices below :data:`MAX_MEMO` (the C unpickler sizes its memo by the
  largest index it is given);
* no argument may claim more bytes than the file holds; integers are limited
  to :data:`MAX_INT_DIGITS` digits;
* every value's *expanded size* (what walking it as a tree visits, shared
  references counted each time) is at most :data:`MAX_EXPANDED`: a few
  kilobytes of shared references can describe 2^60 elements, which hashing a
  tuple, ``str()`` or ``np.asarray`` would visit one by one.

After unpickling, the object graph is walked once (iteratively): cycles,
nesting deeper than :data:`MAX_DEPTH` and expanded sizes above
:data:`MAX_EXPANDED` are refused, so no later consumer can recurse or explode.
Arrays are limited to :data:`MAX_ARRAY_BYTES` each and :data:`MAX_NDIM`
dimensions; at most :data:`MAX_INERT_CLASSES` distinct chumpy/scipy class
names are admitted per file. Past a limit, :class:`PickleLimitError` (an
UnsafePickleError) says which.

Torch zip checkpoints
---------------------
:func:`read_torch_zip` reads the ``data.pkl`` of an archive opened with
:class:`.bounded.BoundedZip` into :class:`TensorRef` objects: the storage's
type, element count and key, and the tensor's offset, size and stride, each
checked for type and range when the pickle is read. :meth:`TensorRef.read`
then checks the geometry against the storage (every element the view can
reach lies inside the storage; no negative strides or offsets; at most
:data:`MAX_TENSOR_BYTES` out) and the storage member's declared size before
reading exactly the bytes the storage holds.
"""
import collections
import io
import pickle
import pickletools

import numpy as np

from .bounded import ArchiveError, LimitError, one_line, shown

MAX_OPCODES = 1 << 18            # an SMPL pickle has a few thousand
MAX_CHECKPOINT_OPCODES = 1 << 20  # a HybrIK(-X) data.pkl has ~70,000
MAX_MARKS = 1000
MAX_MEMO = 1 << 20
MAX_INT_DIGITS = 4000
MAX_EXPANDED = 1 << 22
MAX_DEPTH = 100
MAX_NDIM = 8
MAX_ARRAY_BYTES = 1 << 30
MAX_INERT_CLASSES = 256
MAX_TENSOR_BYTES = 1 << 28
MAX_STORAGE_BYTES = 1 << 30
MAX_STRING_ITEMSIZE = 1 << 16


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list, or is
    past one of the limits."""

    def __init__(self, message=""):
        super().__init__(one_line(message))


class PickleLimitError(UnsafePickleError):
    """The pickle is past one of the documented limits."""


class MalformedPickleError(pickle.UnpicklingError):
    """The bytes are not a well-formed pickle (truncated, unknown opcodes)."""

    def __init__(self, message=""):
        super().__init__(one_line(message))


# --- the pre-scan -------------------------------------------------------------------

_MARK = object()
_OPS = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}
_ARG_LENGTHS = {  # pickletools' codes for variable-length arguments
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False), pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}


def scan_pickle(data, start=0, max_opcodes=MAX_OPCODES):
    """Check one pickle in `data` (from `start`) against the limits without
    running it; returns the offset just past its STOP opcode."""
    if not hasattr(data, "find"):  # bytes, bytearray and mmap are scanned in place
        data = bytes(data)
    view = memoryview(data)
    try:
        return _scan(data, view, start, max_opcodes)
    finally:
        view.release()  # an mmap can be closed after a refusal


def _scan(data, view, start, max_opcodes):
    end = len(view)
    pos = start
    stack = []          # expanded size of each stack item (_MARK for marks)
    marks = 0
    memo = {}
    ops = 0

    def fail(msg):
        raise PickleLimitError(f"{msg} (at byte {pos})")

    def bad(msg):
        raise MalformedPickleError(f"{msg} (at byte {pos})")

    def pop(n=1):
        if len(stack) < n or any(s is _MARK for s in stack[len(stack) - n:]):
            bad("malformed pickle: stack underflow")
        out = stack[len(stack) - n:]
        del stack[len(stack) - n:]
        return out

    def pop_mark():
        nonlocal marks
        try:
            i = len(stack) - 1 - stack[::-1].index(_MARK)
        except ValueError:
            bad("malformed pickle: no mark")
        items = stack[i + 1:]
        del stack[i:]
        marks -= 1
        return items

    def grow(cost):
        if cost > MAX_EXPANDED:
            fail(f"a value expands to more than {MAX_EXPANDED} elements through shared "
                 "references")
        return cost

    while True:
        if pos >= end:
            bad("truncated pickle (no STOP)")
        op = _OPS.get(view[pos])
        if op is None:
            bad(f"unknown pickle opcode 0x{view[pos]:02x}")
        ops += 1
        if ops > max_opcodes:
            fail(f"more than {max_opcodes} pickle opcodes")
        pos += 1
        arg = op.arg
        value = None
        if arg is not None:
            n = arg.n
            if n >= 0:
                if pos + n > end:
                    bad("truncated pickle")
                value = bytes(view[pos:pos + n])
                pos += n
            elif n == pickletools.UP_TO_NEWLINE:
                lines = 2 if arg.name == "stringnl_noescape_pair" else 1
                short = op.name in ("GLOBAL", "INST", "INT", "LONG", "GET", "PUT",
                                                 "PERSID")
                first = pos
                for _ in range(lines):
                    nl = data.find(b"\n", pos, min(end, pos + (1 << 16)) if short else end)
                    if nl < 0:
                        bad("truncated or overlong text argument")
                    pos = nl + 1
                value = bytes(view[first:pos])
                if op.name in ("INT", "LONG") and len(value) > MAX_INT_DIGITS:
                    fail(f"an integer of more than {MAX_INT_DIGITS} digits")
            else:
                width, signed = _ARG_LENGTHS[n]
                if pos + width > end:
                    bad("truncated pickle")
                length = int.from_bytes(view[pos:pos + width], "little", signed=signed)
                pos += width
                if length < 0 or length > end - pos:
                    bad(f"an argument declares {length} bytes; the file holds {end - pos} "
                         "more")
                if op.name in ("LONG1", "LONG4") and length * 2.41 > MAX_INT_DIGITS:
                    fail(f"an integer of more than {MAX_INT_DIGITS} digits")
                pos += length
        name = op.name
        if name == "MARK":
            marks += 1
            if marks > MAX_MARKS:
                fail(f"more than {MAX_MARKS} nested pickle marks")
            stack.append(_MARK)
        elif name == "STOP":
            pop()
            return pos
        elif name in ("PROTO", "FRAME", "READONLY_BUFFER"):
            pass
        elif name in _PUTS or name == "MEMOIZE":
            if name == "MEMOIZE":
                idx = len(memo)
            elif name == "PUT":
                idx = int(value)
            else:
                idx = int.from_bytes(value, "little")
            if idx >= MAX_MEMO:
                fail(f"a memo index of {idx}; at most {MAX_MEMO}")
            if not stack or stack[-1] is _MARK:
                bad("malformed pickle: nothing to memoize")
            memo[idx] = stack[-1]
        elif name in _GETS:
            idx = int(value) if name == "GET" else int.from_bytes(value, "little")
            if idx not in memo:
                bad("malformed pickle: unknown memo index")
            stack.append(memo[idx])
        elif name == "POP":
            if stack and stack[-1] is _MARK:
                pop_mark()
            else:
                pop()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            stack.append(pop()[0])
            stack.append(stack[-1])
        elif name in ("APPEND", "SETITEM", "BUILD"):
            got = pop(2 if name == "SETITEM" else 1)
            target = pop()[0]
            stack.append(grow(target + sum(got)))
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            got = pop_mark()
            target = pop()[0]
            stack.append(grow(target + sum(got)))
        elif name in ("LIST", "TUPLE", "DICT", "FROZENSET", "INST", "OBJ"):
            stack.append(grow(1 + sum(pop_mark())))
        else:
            before = [s for s in op.stack_before]
            if pickletools.markobject in before:
                bad(f"malformed pickle: unexpected {name}")
            got = pop(len(before))
            for _ in op.stack_after:
                stack.append(grow(1 + sum(got)))


# --- the object graph -------------------------------------------------------------

def _children(obj):
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, Inert):
        return [*getattr(obj, "_args", ()), getattr(obj, "_state", None)]
    return None


def check_graph(root):
    """Refuse cycles, nesting deeper than MAX_DEPTH and expanded sizes above
    MAX_EXPANDED in an unpickled object graph (iteratively, once per node;
    the depth is refused on the way down, before the walk reaches the end)."""
    done = {}
    path = set()
    todo = [(root, False)]
    while todo:
        obj, leaving = todo.pop()
        key = id(obj)
        if not leaving:
            if key in done:
                continue
            kids = _children(obj)
            if not kids:
                done[key] = 1
                continue
            path.add(key)
            if len(path) > MAX_DEPTH:
                raise PickleLimitError(f"the pickle nests objects more than {MAX_DEPTH} deep")
            todo.append((obj, True))
            for kid in kids:
                if id(kid) in path:
                    raise PickleLimitError("the pickle holds a structure that contains "
                                           "itself")
                if id(kid) not in done:
                    todo.append((kid, False))
        else:
            path.discard(key)
            size = 1 + sum(done[id(k)] for k in _children(obj))
            if size > MAX_EXPANDED:
                raise PickleLimitError(f"a value expands to more than {MAX_EXPANDED} elements "
                                       "through shared references")
            done[key] = size


# --- inert stand-ins ----------------------------------------------------------------

class Inert:
    """Stand-in for a chumpy or scipy object: it only stores its state.

    The class's ``qualname`` (``module.Name`` as the pickle spelled it) is a
    class attribute that the state cannot overwrite: the state lives in
    ``_state``, never in the instance's ``__dict__``."""

    qualname = "?"
    __slots__ = ("_args", "_state")

    def __init__(self, *args, **kwargs):
        self._args = args
        self._state = None

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict) \
                and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **state[1]}
        self._state = state

    @property
    def state(self):
        """The state dict (string keys), or {} when the state was no dict."""
        st = getattr(self, "_state", None)
        return {k: v for k, v in st.items() if isinstance(k, str)} if isinstance(st, dict) \
            else {}

    @property
    def kind(self):
        return type(self).qualname


def _inert_class(classes, module, name):
    key = f"{module}.{name}"
    cls = classes.get(key)
    if cls is None:
        if len(classes) >= MAX_INERT_CLASSES:
            raise PickleLimitError(f"more than {MAX_INERT_CLASSES} distinct chumpy/scipy "
                                   "classes")
        cls = type(name, (Inert,), {"qualname": key, "__slots__": ()})
        classes[key] = cls
    return cls


def _reconstructor(cls, base, state=None):
    """Safe replacement for copyreg._reconstructor: builds inert objects only."""
    if not (isinstance(cls, type) and issubclass(cls, Inert)) or base is not object:
        raise UnsafePickleError("refused to reconstruct an object that is not a chumpy or "
                                "scipy.sparse stand-in")
    return cls.__new__(cls)


def _codecs_encode(text, encoding="utf-8"):
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafePickleError("refused a _codecs.encode call with unexpected arguments")
    return text.encode(encoding)


def _bytes(*args):
    # protocols 0-2 write an empty bytes object as bytes()
    if args:
        raise UnsafePickleError("refused a bytes() call with arguments")
    return b""


# --- numpy builders -----------------------------------------------------------------

_DTYPE_KINDS = "biufSU"


def _int(value, what, low=0, high=None):
    if not isinstance(value, int) or isinstance(value, bool) and what != "flag":
        raise UnsafePickleError(f"{what} is not an integer")
    if value < low or (high is not None and value > high):
        raise PickleLimitError(f"{what} {value} is out of range")
    return value


class DtypeStub:
    """What ``numpy.dtype(...)`` and its BUILD give in a pickle: a checked
    plain numeric or string dtype (or the object dtype, which is only ever
    refused)."""

    __slots__ = ("base", "order")

    def __init__(self, spec, align=False, copy=False):
        if isinstance(spec, bytes):
            spec = spec.decode("latin-1")
        if not isinstance(spec, str) or len(spec) > 12:
            raise UnsafePickleError("refused a numpy dtype that is not a plain type code")
        if spec in ("O", "O4", "O8", "|O"):
            self.base, self.order = None, "|"
            return
        try:
            dt = np.dtype(spec)
        except (TypeError, ValueError):
            raise UnsafePickleError(f"refused the numpy dtype '{shown(spec)}'") from None
        if dt.kind not in _DTYPE_KINDS or dt.fields is not None or dt.subdtype is not None \
                or dt.hasobject:
            raise UnsafePickleError(f"refused the numpy dtype '{shown(spec)}'")
        self.base, self.order = dt, "="

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise UnsafePickleError("refused a numpy dtype state of an unknown layout")
        order, sub, names, fields, elsize = state[1], state[2], state[3], state[4], state[5]
        if order not in ("<", ">", "|", "=") or sub is not None or names is not None \
                or fields is not None or (len(state) == 9 and state[8] is not None):
            raise UnsafePickleError("refused a structured or sub-array numpy dtype")
        _int(elsize, "a dtype's item size", -1, MAX_STRING_ITEMSIZE)
        self.order = order
        if self.base is not None and self.base.kind in "SUV" and elsize > 0:
            unit = 4 if self.base.kind == "U" else 1
            if elsize % unit:
                raise UnsafePickleError("refused a string dtype of an odd size")
            self.base = np.dtype(f"{self.base.kind}{elsize // unit}")

    @property
    def is_object(self):
        return self.base is None

    def numpy(self):
        if self.base is None:
            raise ValueError("object arrays are not allowed")
        order = {"=": "=", "|": "|", "<": "<", ">": ">"}[self.order]
        return self.base.newbyteorder(order) if self.base.itemsize > 1 and order != "|" \
            else self.base


def _as_dtype(dtype):
    if not isinstance(dtype, DtypeStub):
        raise UnsafePickleError("refused an array whose dtype is not a numpy dtype")
    return dtype


def _shape(shape):
    if not isinstance(shape, tuple) or len(shape) > MAX_NDIM:
        raise UnsafePickleError("refused an array shape that is not a short tuple")
    count = 1
    for s in shape:
        count *= _int(s, "an array dimension", 0, MAX_ARRAY_BYTES)
    return shape, count


def _array_from_bytes(data, dtype, shape, fortran):
    shape, count = _shape(shape)
    if dtype.is_object:
        return None
    dt = dtype.numpy()
    if isinstance(data, str):
        data = data.encode("latin-1")
    elif isinstance(data, pickle.PickleBuffer):
        data = bytes(data.raw())
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("refused an array whose data are not bytes")
    nbytes = count * dt.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise PickleLimitError(f"an array of {nbytes / 2**30:.1f} GiB; at most "
                               f"{MAX_ARRAY_BYTES >> 30} GiB")
    if len(data) != nbytes:
        raise UnsafePickleError(f"an array of shape {shown(shape)} {dt} needs {nbytes} bytes, "
                                f"the pickle holds {len(data)}")
    arr = np.frombuffer(data, dtype=dt)  # read-only; callers copy when they convert
    return arr.reshape(shape, order="F" if fortran else "C")


class ArrayStub:
    """What numpy's ``_reconstruct`` + BUILD (protocols 0-4) or
    ``_frombuffer`` (protocol 5) give in a pickle: the checked array in
    ``array`` (None for object arrays, which are never built)."""

    __slots__ = ("array", "is_object", "built")

    def __init__(self):
        self.array, self.is_object, self.built = None, False, False

    def __setstate__(self, state):
        if self.built:
            raise UnsafePickleError("refused a second state for one array")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError("refused an array state of an unknown layout")
        if len(state) == 5:
            _int(state[0], "the array state version", 0, 1)
            state = state[1:]
        shape, dtype, fortran, data = state
        dtype = _as_dtype(dtype)
        if not isinstance(fortran, (bool, int)):
            raise UnsafePickleError("refused an array state with a bad order flag")
        self.built = True
        if dtype.is_object:
            _shape(shape)
            self.is_object = True
            return
        self.array = _array_from_bytes(data, dtype, shape, bool(fortran))


def _reconstruct(cls, shape, typecode):
    if cls is not np.ndarray:
        raise UnsafePickleError("refused to reconstruct a numpy subclass")
    if not isinstance(shape, tuple) or shape not in ((0,), ()):
        raise UnsafePickleError("refused numpy's _reconstruct with a non-empty shape")
    return ArrayStub()


def _frombuffer(buf, dtype, shape, order="C"):
    stub = ArrayStub()
    dtype = _as_dtype(dtype)
    if order not in ("C", "F"):
        raise UnsafePickleError("refused an array with an unknown order")
    if dtype.is_object:
        stub.is_object = True
    else:
        stub.array = _array_from_bytes(buf, dtype, shape, order == "F")
    stub.built = True
    return stub


def _scalar(dtype, data=None):
    dtype = _as_dtype(dtype)
    if dtype.is_object:
        raise UnsafePickleError("refused a numpy object scalar")
    arr = _array_from_bytes(data, dtype, (1,), False)
    return arr[0].item()


def _numpy_globals():
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): DtypeStub}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = _scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return allowed


_SPARSE_MODULES = ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr",
                   "scipy.sparse._csr", "scipy.sparse.compressed",
                   "scipy.sparse._compressed", "scipy.sparse.coo", "scipy.sparse._coo")

_SMPL_GLOBALS = {
    **_numpy_globals(),
    ("copy_reg", "_reconstructor"): _reconstructor, ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object, ("builtins", "object"): object,
    ("__builtin__", "set"): set, ("builtins", "set"): set,  # chumpy state holds sets
    ("__builtin__", "frozenset"): frozenset, ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("__builtin__", "bytes"): _bytes, ("builtins", "bytes"): _bytes,
}


class SMPLUnpickler(pickle.Unpickler):
    """Admits numpy arrays, chumpy objects and scipy sparse matrices only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._classes = {}

    def find_class(self, module, name):
        found = _SMPL_GLOBALS.get((module, name))
        if found is not None:
            return found
        if (module == "chumpy" or module.startswith("chumpy.")) and name.isidentifier() \
                and len(module) + len(name) < 200:
            return _inert_class(self._classes, module, name)
        if module in _SPARSE_MODULES and name in ("csc_matrix", "csr_matrix", "coo_matrix"):
            return _inert_class(self._classes, module, name)
        raise UnsafePickleError(f"refused to load '{shown(module)}.{shown(name)}': not an "
                                "array, chumpy or scipy.sparse class")

    def persistent_load(self, pid):
        raise UnsafePickleError("refused a persistent id: not an SMPL model pickle")


def _guarded_load(unpickler_cls, data, encoding, max_opcodes=MAX_OPCODES):
    end = scan_pickle(data, max_opcodes=max_opcodes)
    try:
        obj = unpickler_cls(io.BytesIO(data), encoding=encoding).load()
        del end
    except UnsafePickleError:
        raise
    except RecursionError:
        raise PickleLimitError("the pickle nests too deeply") from None
    except MemoryError:
        raise PickleLimitError("the pickle needs more memory than is available") from None
    check_graph(obj)
    return obj


def load_smpl_pickle(data: bytes):
    """Unpickle an SMPL model file (Python 2 or 3, protocols 0-5) without
    running its code, under the limits of this module."""
    return _guarded_load(SMPLUnpickler, data, "latin1")


MAX_DENSE_ELEMENTS = 1 << 25


def _plain_array(value, what):
    arr = plain_value(value)
    if not isinstance(arr, np.ndarray):
        try:
            arr = np.asarray(arr)
        except (ValueError, TypeError, OverflowError):
            raise ValueError(f"its '{what}' is not an array") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"its '{what}' is not numeric ({shown(arr.dtype.str)})")
    return arr


def _index_array(value, what, n=None):
    arr = _plain_array(value, what)
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or (n is not None and len(arr) != n):
        raise ValueError(f"its '{what}' is not a list of {n if n is not None else ''} "
                         "integers".replace("  ", " "))
    return arr.astype(np.int64)


def sparse_to_dense(obj):
    """Dense float64 array from an inert scipy csc/csr/coo matrix, every
    part checked: the shape (at most MAX_DENSE_ELEMENTS), the data and index
    lengths, indices inside the shape, a non-decreasing index pointer."""
    d = obj.state
    kind = obj.kind.rsplit(".", 1)[-1]
    shape = d.get("_shape", d.get("shape"))
    if not isinstance(shape, (tuple, list)) or len(shape) != 2 \
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"a sparse {kind} without a valid shape")
    rows, cols = shape
    if rows * cols > MAX_DENSE_ELEMENTS:
        raise ValueError(f"a sparse {kind} of {rows} x {cols}; at most "
                         f"{MAX_DENSE_ELEMENTS} elements")
    if "data" not in d:
        raise ValueError(f"a sparse {kind} without data")
    data = _plain_array(d["data"], "data")
    if data.ndim != 1:
        raise ValueError(f"a sparse {kind} whose data are not a list")
    data = data.astype(np.float64)
    nnz = len(data)
    out = np.zeros((rows, cols), dtype=np.float64)
    if kind == "coo_matrix":
        coords = d.get("coords")
        r = d.get("row", coords[0] if isinstance(coords, (tuple, list)) and coords else None)
        c = d.get("col", coords[1] if isinstance(coords, (tuple, list)) and len(coords) > 1
                  else None)
        if r is None or c is None:
            raise ValueError("a sparse coo_matrix without row and column indices")
        r, c = _index_array(r, "row", nnz), _index_array(c, "col", nnz)
        if nnz and (r.min() < 0 or r.max() >= rows or c.min() < 0 or c.max() >= cols):
            raise ValueError("a sparse coo_matrix with indices outside its shape")
        np.add.at(out, (r, c), data)
        return out
    if "indices" not in d or "indptr" not in d:
        raise ValueError(f"a sparse {kind} without indices or indptr")
    major, minor = (cols, rows) if kind == "csc_matrix" else (rows, cols)
    indices = _index_array(d["indices"], "indices", nnz)
    indptr = _index_array(d["indptr"], "indptr", major + 1)
    if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
        raise ValueError(f"a sparse {kind} with an inconsistent indptr")
    if nnz and (indices.min() < 0 or indices.max() >= minor):
        raise ValueError(f"a sparse {kind} with indices outside its shape")
    which = np.repeat(np.arange(major), np.diff(indptr))
    if kind == "csc_matrix":
        np.add.at(out, (indices, which), data)
    else:
        np.add.at(out, (which, indices), data)
    return out


def plain_value(obj):
    """Turn an unpickled value into a plain numpy array where possible;
    ValueError (one line) for what cannot be one."""
    if isinstance(obj, ArrayStub):
        if obj.is_object:
            raise ValueError("object arrays are not allowed")
        if obj.array is None:
            raise ValueError("an array without data")
        return obj.array
    if isinstance(obj, Inert):
        if obj.kind.startswith("scipy."):
            return sparse_to_dense(obj)
        state = obj.state
        if "x" in state:  # a chumpy Ch keeps its value in .x
            return plain_value(state["x"])
        raise ValueError(f"a {shown(obj.kind)} object holds no stored value")
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        raise ValueError("object arrays are not allowed")
    if isinstance(obj, (DtypeStub,)):
        raise ValueError("a bare dtype is not an array")
    return obj


# --- torch zip checkpoints ------------------------------------------------

_TORCH_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}
_ITEMSIZE = {"bfloat16": 2, **{v: np.dtype(v).itemsize for v in _TORCH_STORAGE_DTYPES.values()
                               if v != "bfloat16"}}


class StorageRef:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel

    @property
    def nbytes(self):
        return self.numel * _ITEMSIZE[self.dtype]


class TensorRef:
    """A tensor in a torch checkpoint, read lazily by :meth:`read`."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, StorageRef):
            raise UnsafePickleError("a tensor whose storage is not a checkpoint storage")
        if not isinstance(size, tuple) or not isinstance(stride, tuple) \
                or len(size) != len(stride) or len(size) > MAX_NDIM:
            raise UnsafePickleError("a tensor with a malformed size or stride")
        self.storage = storage
        self.offset = _int(offset, "a tensor's storage offset", 0, 1 << 62)
        self.shape = tuple(_int(s, "a tensor dimension", 0, 1 << 62) for s in size)
        self.stride = tuple(_int(s, "a tensor stride", 0, 1 << 62) for s in stride)

    @property
    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self):
        return self.numel * _ITEMSIZE[self.storage.dtype]

    def check(self):
        """Refuse a geometry that reaches outside the storage or expands
        past MAX_TENSOR_BYTES, or a storage above MAX_STORAGE_BYTES (nothing
        is read); returns the last storage element the view reaches (-1 for
        an empty tensor)."""
        if self.nbytes > MAX_TENSOR_BYTES:
            raise ValueError(f"a tensor of shape {self.shape} would take "
                             f"{self.nbytes / 2**20:.0f} MiB; at most "
                             f"{MAX_TENSOR_BYTES >> 20} MiB")
        if self.storage.nbytes > MAX_STORAGE_BYTES:
            raise ValueError(f"a storage of {self.storage.nbytes / 2**20:.0f} MiB; at most "
                             f"{MAX_STORAGE_BYTES >> 20} MiB")
        if self.numel == 0:
            return -1
        last = self.offset + sum((s - 1) * st for s, st in zip(self.shape, self.stride))
        if last >= self.storage.numel:
            raise ValueError(f"a tensor of shape {self.shape} (stride {self.stride}, offset "
                             f"{self.offset}) reaches element {last} of a storage of "
                             f"{self.storage.numel}")
        return last

    def read(self, zf, prefix, byteorder="little"):
        """The tensor as a new numpy array (bfloat16 as float32), read from a
        :class:`.bounded.BoundedZip` after :meth:`check`."""
        last = self.check()
        dtype = self.storage.dtype
        if self.numel == 0:
            return np.zeros(self.shape, np.float32 if dtype == "bfloat16" else dtype)
        member = f"{prefix}data/{self.storage.key}"
        item = _ITEMSIZE[dtype]
        try:  # only the storage's bytes this view reaches
            raw = zf.read(member, MAX_STORAGE_BYTES, nbytes=(last + 1) * item)
        except ArchiveError as exc:
            raise ValueError(str(exc)) from None
        big = byteorder == "big"
        if dtype == "bfloat16":
            flat = (np.frombuffer(raw, ">u2" if big else "<u2").astype(np.uint32) << 16) \
                .view(np.float32)
        else:
            dt = np.dtype(dtype)
            flat = np.frombuffer(raw, dt.newbyteorder(">") if big and dt.itemsize > 1 else dt)
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.shape,
            strides=tuple(st * flat.itemsize for st in self.stride), writeable=False)
        return np.array(view, dtype=flat.dtype.newbyteorder("="))


def _rebuild_tensor(storage, offset, size, stride, *rest):
    return TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    if not isinstance(data, TensorRef):
        raise UnsafePickleError("a parameter that is not a tensor")
    return data


def _torch_device(spec, index=None):
    if not isinstance(spec, str) or len(spec) > 32 or \
            (index is not None and not isinstance(index, int)):
        raise UnsafePickleError("a torch.device that is not a short name")
    return spec


class TorchZipUnpickler(pickle.Unpickler):
    """Reads the ``data.pkl`` of a torch zip checkpoint into TensorRefs.

    Admits the same narrow set of globals as ``torch.load(weights_only=True)``
    needs for a state dict; builds no torch objects.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storages = {}

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _TORCH_STORAGE_DTYPES[name]
        if module == "torch" and name == "device":
            return _torch_device
        raise UnsafePickleError(f"refused to load '{shown(module)}.{shown(name)}' from a "
                                "checkpoint")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError("unexpected persistent id in checkpoint")
        dtype, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
            raise UnsafePickleError("unexpected storage type in checkpoint")
        if not isinstance(key, (str, int)) or isinstance(key, bool) or len(str(key)) > 64:
            raise UnsafePickleError("unexpected storage key in checkpoint")
        numel = _int(numel, "a storage's element count", 0, 1 << 62)
        if len(pid) > 5 and pid[5] is not None:
            raise UnsafePickleError("storage views of the legacy format are not supported")
        key = str(key)
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = StorageRef(dtype, key, numel)
        elif (ref.dtype, ref.numel) != (dtype, numel):
            raise UnsafePickleError(f"storage '{shown(key)}' is described twice, differently")
        return ref


MAX_DATA_PKL_BYTES = 64 << 20


def read_torch_zip(zf):
    """Return (prefix, object) for a torch zip checkpoint opened as a
    :class:`.bounded.BoundedZip`. The object is the unpickled top level with
    tensors as TensorRef; ``data.pkl`` is read under the pickle limits."""
    names = [n for n in zf.names if n.endswith("data.pkl")]
    if not names:
        raise ValueError("not a torch checkpoint (no data.pkl in the archive)")
    name = min(names, key=len)
    prefix = name[: -len("data.pkl")]
    try:
        data = zf.read(name, MAX_DATA_PKL_BYTES)
    except ArchiveError as exc:
        raise ValueError(str(exc)) from None
    obj = _guarded_load(TorchZipUnpickler, bytes(data), "utf-8", MAX_CHECKPOINT_OPCODES)
    return prefix, obj


def torch_byteorder(zf, prefix):
    """'little' or 'big': the checkpoint's byte order record (default little)."""
    member = f"{prefix}byteorder"
    if member not in zf.names:
        return "little"
    try:
        text = bytes(zf.read(member, 16)).decode("ascii", "replace").strip()
    except ArchiveError as exc:
        raise ValueError(str(exc)) from None
    if text not in ("little", "big"):
        raise ValueError(f"unknown byte order record '{shown(text)}'")
    return text


LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
MAX_CHECKPOINT_BYTES = 8 << 30


class _PlainUnpickler(pickle.Unpickler):
    """Plain values only: no global, no persistent id."""

    def find_class(self, module, name):
        raise UnsafePickleError(f"refused to load '{shown(module)}.{shown(name)}' from a "
                                "checkpoint header")

    def persistent_load(self, pid):
        raise UnsafePickleError("unexpected persistent id in a checkpoint header")


class _LegacyStore:
    """The storages of a legacy (pre-zip, torch < 1.6) checkpoint, each an
    (offset, size) in the file, with BoundedZip's ``read``."""

    def __init__(self, data, records):
        self.data, self.records = data, records
        self.names = list(records)

    def read(self, member, max_bytes, nbytes=None):
        if member not in self.records:
            raise ArchiveError(f"the checkpoint has no storage '{shown(member)}'")
        offset, size = self.records[member]
        if size > max_bytes:
            raise LimitError(f"a storage of {size / 2**20:.0f} MiB; at most "
                             f"{max_bytes / 2**20:.0f} MiB are read")
        n = size if nbytes is None else nbytes
        if n > size:
            raise ArchiveError(f"storage '{shown(member)}' holds {size} bytes, {n} are needed")
        return self.data[offset:offset + n]

    def close(self):
        close = getattr(self.data, "close", None)
        if close is not None:
            close()


def _legacy_load(data):
    """(store, object, byteorder) of a legacy torch file: three header
    pickles, the object pickle, the list of storage keys, then each storage
    as an 8-byte element count and its bytes (all checked against the file)."""
    pos, header = 0, []
    for _ in range(3):
        end = scan_pickle(data, pos)
        header.append(_PlainUnpickler(io.BytesIO(data[pos:end])).load())
        pos = end
    magic, protocol, info = header
    if magic != LEGACY_MAGIC or protocol != 1001 or not isinstance(info, dict):
        raise ValueError("not a torch checkpoint (unknown legacy header)")
    byteorder = "little" if info.get("little_endian", True) else "big"
    end = scan_pickle(data, pos, MAX_CHECKPOINT_OPCODES)
    unpickler = TorchZipUnpickler(io.BytesIO(data[pos:end]), encoding="utf-8")
    try:
        obj = unpickler.load()
    except UnsafePickleError:
        raise
    except RecursionError:
        raise PickleLimitError("the pickle nests too deeply") from None
    check_graph(obj)
    pos = end
    end = scan_pickle(data, pos)
    keys = _PlainUnpickler(io.BytesIO(data[pos:end])).load()
    pos = end
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) \
            or len(keys) > (1 << 16):
        raise ValueError("damaged legacy checkpoint (storage key list)")
    records = {}
    for key in keys:
        ref = unpickler.storages.get(key)
        if ref is None or f"data/{key}" in records:
            raise ValueError(f"damaged legacy checkpoint (storage '{shown(key)}')")
        if pos + 8 > len(data):
            raise ValueError("the checkpoint is truncated")
        count = int.from_bytes(data[pos:pos + 8], "little", signed=True)
        if count != ref.numel:
            raise ValueError(f"storage '{shown(key)}' holds {count} elements, its tensor "
                             f"says {ref.numel}")
        if pos + 8 + ref.nbytes > len(data):
            raise ValueError("the checkpoint is truncated")
        records[f"data/{key}"] = (pos + 8, ref.nbytes)
        pos += 8 + ref.nbytes
    return _LegacyStore(data, records), obj, byteorder


class TorchCheckpoint:
    """A torch checkpoint (zip, or the legacy format) opened under the
    limits of this module: ``obj`` is its unpickled top level with tensors as
    :class:`TensorRef`; :meth:`read` reads one. No torch is involved."""

    def __init__(self, path, name=None):
        import mmap
        import os
        from . import bounded
        self.name = shown(name or os.path.basename(os.fspath(path)))
        with bounded.open_regular(path, "checkpoint") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise ValueError("the file is empty")
            if size > MAX_CHECKPOINT_BYTES:
                raise LimitError(f"the file is {size / 2**30:.1f} GiB; a checkpoint is at most "
                                 f"{MAX_CHECKPOINT_BYTES >> 30} GiB")
            head = fh.read(4)
            if not head.startswith(b"PK"):
                data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if head.startswith(b"PK"):
            self.store = bounded.BoundedZip(path, self.name, what="checkpoint")
            try:
                self.prefix, self.obj = read_torch_zip(self.store)
                self.byteorder = torch_byteorder(self.store, self.prefix)
            except BaseException:
                self.store.close()
                raise
        else:
            try:
                self.store, self.obj, self.byteorder = _legacy_load(data)
            except BaseException:
                data.close()
                raise
            self.prefix = ""

    def read(self, ref):
        return ref.read(self.store, self.prefix, self.byteorder)

    def close(self):
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
