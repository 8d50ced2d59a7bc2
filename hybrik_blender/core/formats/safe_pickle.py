"""Restricted unpicklers for SMPL model pickles and torch zip checkpoints.

Official SMPL ``.pkl`` files are Python-2 pickles whose arrays are wrapped in
chumpy objects, with the joint regressor as a scipy sparse matrix. Neither
chumpy nor scipy is needed (or trusted) here: every global the pickle asks for
is checked against an allow-list. numpy's array reconstruction is admitted;
chumpy and scipy.sparse classes become inert stand-ins that only record their
state; anything else (``os.system``, ``subprocess.Popen``, ``builtins.eval``
...) raises :class:`UnsafePickleError` before any object is built.
"""
import io
import pickle

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list."""


class Inert:
    """Stand-in for a chumpy or scipy object: it only stores its state."""

    qualname = "?"

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        else:
            self._state = state


_INERT_CLASSES = {}


def _inert_class(module, name):
    key = f"{module}.{name}"
    cls = _INERT_CLASSES.get(key)
    if cls is None:
        cls = type(name, (Inert,), {"qualname": key})
        _INERT_CLASSES[key] = cls
    return cls


def _reconstructor(cls, base, state):
    """Safe replacement for copyreg._reconstructor: builds inert objects only."""
    if not (isinstance(cls, type) and issubclass(cls, Inert)) or base is not object:
        raise UnsafePickleError(f"refused to reconstruct {cls!r} from {base!r}")
    return cls.__new__(cls)


def _codecs_encode(text, encoding="utf-8"):
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafePickleError("refused a _codecs.encode call with unexpected arguments")
    return text.encode(encoding)


def _numpy_globals():
    mods = {}
    for name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            mods[name] = __import__(name, fromlist=["_reconstruct"])
        except ImportError:
            pass
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for modname in ("numpy.core.multiarray", "numpy._core.multiarray"):
        mod = mods.get(modname) or next(iter(mods.values()))
        allowed[(modname, "_reconstruct")] = mod._reconstruct
        allowed[(modname, "scalar")] = mod.scalar
    return allowed


_SPARSE_MODULES = ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr",
                   "scipy.sparse._csr", "scipy.sparse.compressed",
                   "scipy.sparse._compressed", "scipy.sparse.coo", "scipy.sparse._coo")


class SMPLUnpickler(pickle.Unpickler):
    """Admits numpy arrays, chumpy objects and scipy sparse matrices only."""

    _allowed = None

    def find_class(self, module, name):
        if SMPLUnpickler._allowed is None:
            allowed = _numpy_globals()
            allowed[("copy_reg", "_reconstructor")] = _reconstructor
            allowed[("copyreg", "_reconstructor")] = _reconstructor
            allowed[("__builtin__", "object")] = object
            allowed[("builtins", "object")] = object
            for mod in ("__builtin__", "builtins"):  # chumpy state holds sets
                allowed[(mod, "set")] = set
                allowed[(mod, "frozenset")] = frozenset
            allowed[("_codecs", "encode")] = _codecs_encode
            SMPLUnpickler._allowed = allowed
        found = SMPLUnpickler._allowed.get((module, name))
        if found is not None:
            return found
        if (module == "chumpy" or module.startswith("chumpy.")) and name.isidentifier():
            return _inert_class(module, name)
        if module in _SPARSE_MODULES and name in ("csc_matrix", "csr_matrix", "coo_matrix"):
            return _inert_class(module, name)
        raise UnsafePickleError(f"refused to load '{module}.{name}': not an array, "
                                "chumpy or scipy.sparse class")

    def persistent_load(self, pid):
        raise UnsafePickleError("refused a persistent id: not an SMPL model pickle")


def load_smpl_pickle(data: bytes):
    """Unpickle an SMPL model file (Python 2 or 3) without running its code."""
    return SMPLUnpickler(io.BytesIO(data), encoding="latin1").load()


def sparse_to_dense(obj):
    """Dense float64 array from an inert scipy csc/csr/coo matrix."""
    d = obj.__dict__
    shape = tuple(int(s) for s in (d.get("_shape") or d.get("shape")))
    data = np.asarray(d["data"], dtype=np.float64)
    out = np.zeros(shape, dtype=np.float64)
    kind = obj.qualname.rsplit(".", 1)[-1]
    if kind == "coo_matrix":
        rows = np.asarray(d.get("row", d.get("coords", [None])[0]), dtype=np.int64)
        cols = np.asarray(d.get("col", d.get("coords", [None, None])[1]), dtype=np.int64)
        np.add.at(out, (rows, cols), data)
        return out
    indices = np.asarray(d["indices"], dtype=np.int64)
    indptr = np.asarray(d["indptr"], dtype=np.int64)
    major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    if kind == "csc_matrix":
        np.add.at(out, (indices, major), data)
    else:
        np.add.at(out, (major, indices), data)
    return out


def plain_value(obj):
    """Turn an unpickled value into a plain numpy array where possible."""
    if isinstance(obj, Inert):
        if obj.qualname.startswith("scipy."):
            return sparse_to_dense(obj)
        if "x" in obj.__dict__:  # a chumpy Ch keeps its value in .x
            return plain_value(obj.__dict__["x"])
        raise ValueError(f"a {obj.qualname} object holds no stored value")
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        raise ValueError("object arrays are not allowed")
    return obj


# --- torch zip checkpoints ------------------------------------------------

_TORCH_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


class StorageRef:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


class TensorRef:
    """A tensor in a torch checkpoint, read lazily by :meth:`read`."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.shape, self.stride = tuple(size), tuple(stride)

    def read(self, zf, prefix):
        raw = zf.read(f"{prefix}data/{self.storage.key}")
        dtype = self.storage.dtype
        if dtype == "bfloat16":
            flat = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            flat = np.frombuffer(raw, dtype)
        if not self.shape:
            return flat[self.offset].copy()
        item = flat.itemsize
        need = self.offset + sum((s - 1) * st for s, st in zip(self.shape, self.stride)) + 1
        if min(self.shape) > 0 and need > flat.size:
            raise ValueError("tensor data is truncated")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.shape,
            strides=tuple(st * item for st in self.stride))
        return np.array(view)


def _rebuild_tensor(storage, offset, size, stride, *rest):
    return TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    return data


class TorchZipUnpickler(pickle.Unpickler):
    """Reads the ``data.pkl`` of a torch zip checkpoint into TensorRefs.

    Admits the same narrow set of globals as ``torch.load(weights_only=True)``
    needs for a state dict; builds no torch objects.
    """

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            import collections
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _TORCH_STORAGE_DTYPES[name]
        if module == "torch" and name == "device":
            return str
        raise UnsafePickleError(f"refused to load '{module}.{name}' from a checkpoint")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError("unexpected persistent id in checkpoint")
        dtype = pid[1]
        if not isinstance(dtype, str):
            raise UnsafePickleError("unexpected storage type in checkpoint")
        return StorageRef(dtype, str(pid[2]), int(pid[4]))


def read_torch_zip(zf):
    """Return (prefix, object) for an open torch zip checkpoint.

    The object is the unpickled top level with tensors as TensorRef."""
    names = [n for n in zf.namelist() if n.endswith("data.pkl")]
    if not names:
        raise ValueError("not a torch checkpoint (no data.pkl in the archive)")
    name = min(names, key=len)
    prefix = name[: -len("data.pkl")]
    obj = TorchZipUnpickler(io.BytesIO(zf.read(name)), encoding="utf-8").load()
    return prefix, obj
