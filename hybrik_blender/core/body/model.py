"""SMPL body model: loading from the official formats, validation, rest joints.

Three sources give the same :class:`BodyModel`:

* the official ``.pkl`` (Python-2 pickle with chumpy objects), read through
  the restricted unpickler in :mod:`.safe_pickle`; chumpy is not needed;
* an ``.npz`` with the same key names (``v_template``, ``shapedirs``,
  ``posedirs``, ``J_regressor``, ``weights``, ``kintree_table``, ``f``),
  read with ``allow_pickle=False``;
* the ``smpl.*`` buffers that every official HybrIK checkpoint embeds, read
  from the torch zip archive without torch.

Arrays are kept in float64 in SMPL's own frame: metres, +Y up, the body
facing +Z, the subject's left at +X.

SMPL v1.1 ships 300 shape components; HybrIK predicts 10, so only the first
10 are kept, with a warning. Fewer than 10 is an error.
"""
import dataclasses
import logging
import os
import warnings
import zipfile

import numpy as np

from ..formats import safe_pickle
from .skeleton import (LEAF_VERTEX_IDS, NUM_BETAS, NUM_JOINTS, NUM_POSE_CORRECTIVES,
                       PARENTS, SMPL_NUM_VERTICES)

log = logging.getLogger(__name__)


class BodyModelError(ValueError):
    """The file is not a usable SMPL body model; the message says why."""


@dataclasses.dataclass(frozen=True, eq=False)
class BodyModel:
    v_template: np.ndarray      # (V, 3)
    shapedirs: np.ndarray       # (V, 3, 10)
    posedirs: np.ndarray        # (V, 3, 207)
    J_regressor: np.ndarray     # (24, V), dense
    weights: np.ndarray         # (V, 24)
    faces: np.ndarray           # (F, 3) int64
    parents: np.ndarray = dataclasses.field(default_factory=lambda: PARENTS.copy())
    J_regressor_h36m: np.ndarray = None  # (17, V) when known
    source: str = ""

    @property
    def num_vertices(self):
        return self.v_template.shape[0]

    @property
    def num_betas(self):
        return self.shapedirs.shape[2]

    # The joint regressor is linear, so rest joints for any betas are
    # J_template + J_shapedirs . betas: no per-call product over 6890 vertices.
    @property
    def joint_template(self):
        return _cached(self, "_jt", lambda: self.J_regressor @ self.v_template)

    @property
    def joint_shapedirs(self):
        return _cached(self, "_js", lambda: np.einsum("jv,vcb->jcb", self.J_regressor,
                                                      self.shapedirs))


def _cached(obj, name, fn):
    value = obj.__dict__.get(name)
    if value is None:
        value = fn()
        object.__setattr__(obj, name, value)
    return value


def _betas(model, betas):
    """Pad or check betas to the model's count; returns float64 (..., B)."""
    betas = np.asarray(betas, dtype=np.float64)
    nb = model.num_betas
    if betas.shape[-1] > nb:
        raise ValueError(f"{betas.shape[-1]} betas given; the body model has {nb}")
    if betas.shape[-1] < nb:
        pad = np.zeros(betas.shape[:-1] + (nb - betas.shape[-1],))
        betas = np.concatenate([betas, pad], axis=-1)
    return betas


def shaped_vertices(model, betas):
    """(..., B) betas -> (..., V, 3) rest vertices with shape blend shapes."""
    b = _betas(model, betas)
    return model.v_template + np.einsum("vcb,...b->...vc", model.shapedirs, b)


def rest_joints(model, betas):
    """(..., B) betas -> (..., 24, 3) SMPL rest joints."""
    b = _betas(model, betas)
    return model.joint_template + np.einsum("jcb,...b->...jc", model.joint_shapedirs, b)


def leaf_joints(model, betas):
    """(..., B) betas -> (..., 5, 3): head top, finger tips and big toes."""
    b = _betas(model, betas)
    ids = LEAF_VERTEX_IDS
    return model.v_template[ids] + np.einsum("vcb,...b->...vc", model.shapedirs[ids], b)


def rest_joints_29(model, betas):
    """The 24 SMPL joints followed by the five HybrIK leaves."""
    return np.concatenate([rest_joints(model, betas), leaf_joints(model, betas)], axis=-2)


# --- loading ---------------------------------------------------------------

_CHECKPOINT_KEYS = {
    "smpl.v_template": "v_template", "smpl.shapedirs": "shapedirs",
    "smpl.posedirs": "posedirs", "smpl.J_regressor": "J_regressor",
    "smpl.lbs_weights": "weights", "smpl.faces_tensor": "f",
    "smpl.J_regressor_h36m": "J_regressor_h36m", "smpl.parents": "parents",
}


def load_body_model(path):
    """Load an SMPL body model from a .pkl, .npz or HybrIK checkpoint file."""
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise BodyModelError(f"cannot read body model '{name}': {exc.strerror}") from None
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if any(n.endswith("data.pkl") for n in names):
                    arrays = _checkpoint_arrays(zf, name)
                else:
                    arrays = _npz_arrays(path, name)
        except zipfile.BadZipFile:
            raise BodyModelError(f"'{name}' is a damaged or truncated archive") from None
    elif head[:1] in (b"\x80", b"(", b"}"):
        arrays = _pickle_arrays(path, name)
    else:
        raise BodyModelError(f"'{name}' is not an SMPL model (.pkl, .npz) or a HybrIK "
                             "checkpoint (.pth)")
    return body_model_from_arrays(arrays, source=name)


def _pickle_arrays(path, name):
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        obj = safe_pickle.load_smpl_pickle(data)
    except safe_pickle.UnsafePickleError as exc:
        raise BodyModelError(f"'{name}' was refused: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file
        raise BodyModelError(f"'{name}' is not a readable SMPL pickle "
                             f"({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise BodyModelError(f"'{name}' holds a {type(obj).__name__}, not an SMPL model dict")
    out = {}
    for key, value in obj.items():
        try:
            out[str(key)] = safe_pickle.plain_value(value)
        except ValueError as exc:
            if key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "f"):
                raise BodyModelError(f"'{name}': key '{key}': {exc}") from None
    return out


def _npz_arrays(path, name):
    try:
        with np.load(path, allow_pickle=False) as d:
            return {k: d[k] for k in d.files}
    except ValueError as exc:
        raise BodyModelError(f"'{name}' holds Python objects, which are not loaded for "
                             f"safety ({exc})") from None
    except Exception as exc:  # noqa: BLE001
        raise BodyModelError(f"'{name}' is not a readable .npz ({exc})") from None


def _checkpoint_arrays(zf, name):
    try:
        prefix, obj = safe_pickle.read_torch_zip(zf)
    except safe_pickle.UnsafePickleError as exc:
        raise BodyModelError(f"'{name}' was refused: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise BodyModelError(f"'{name}' is not a readable checkpoint ({exc})") from None
    state = checkpoint_state_dict(obj)
    if state is None:
        raise BodyModelError(f"'{name}' holds no state dict")
    out = {}
    for key, ref in state.items():
        target = _CHECKPOINT_KEYS.get(key.removeprefix("module."))
        if target is not None and isinstance(ref, safe_pickle.TensorRef):
            try:
                out[target] = ref.read(zf, prefix)
            except (KeyError, ValueError) as exc:
                raise BodyModelError(f"'{name}': tensor '{key}' is damaged ({exc})") from None
    if "v_template" not in out:
        raise BodyModelError(f"'{name}' is a checkpoint without embedded SMPL buffers "
                             "(smpl.*); choose an SMPL .pkl or .npz instead")
    return out


def checkpoint_state_dict(obj):
    """The state dict inside a checkpoint object: itself or its 'model' entry."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return obj if isinstance(obj, dict) else None


def body_model_from_arrays(arrays, source=""):
    """Validate SMPL arrays (official key names) and build a BodyModel."""
    name = source or "body model"

    def need(key):
        if key not in arrays:
            keys = ", ".join(sorted(map(str, arrays))[:12])
            raise BodyModelError(f"{name}: missing '{key}' (found: {keys}); "
                                 "is this an SMPL model file?")
        try:
            arr = np.asarray(arrays[key])
        except Exception:  # noqa: BLE001
            raise BodyModelError(f"{name}: '{key}' is not an array") from None
        if arr.dtype == object or arr.dtype.kind not in "fiub":
            raise BodyModelError(f"{name}: '{key}' is not numeric ({arr.dtype})")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise BodyModelError(f"{name}: '{key}' contains NaN or infinite values")
        return arr

    v_template = need("v_template").astype(np.float64)
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise BodyModelError(f"{name}: v_template has shape {v_template.shape}, expected (V, 3)")
    nv = v_template.shape[0]
    if nv != SMPL_NUM_VERTICES:
        hint = " (SMPL-X has 10475)" if nv == 10475 else ""
        raise BodyModelError(f"{name}: {nv} vertices{hint}; an SMPL model has "
                             f"{SMPL_NUM_VERTICES}")

    shapedirs = need("shapedirs").astype(np.float64)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (nv, 3):
        raise BodyModelError(f"{name}: shapedirs has shape {shapedirs.shape}, "
                             f"expected ({nv}, 3, betas)")
    nb = shapedirs.shape[2]
    if nb < NUM_BETAS:
        raise BodyModelError(f"{name}: only {nb} shape components; HybrIK needs {NUM_BETAS}")
    if nb > NUM_BETAS:
        msg = (f"{name}: the model has {nb} shape components; HybrIK predicts "
               f"{NUM_BETAS}, so the first {NUM_BETAS} are used")
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
        shapedirs = np.ascontiguousarray(shapedirs[:, :, :NUM_BETAS])

    posedirs = need("posedirs").astype(np.float64)
    if posedirs.shape == (NUM_POSE_CORRECTIVES, nv * 3):  # HybrIK's layout
        posedirs = posedirs.T.reshape(nv, 3, NUM_POSE_CORRECTIVES)
    if posedirs.shape != (nv, 3, NUM_POSE_CORRECTIVES):
        raise BodyModelError(f"{name}: posedirs has shape {posedirs.shape}, expected "
                             f"({nv}, 3, {NUM_POSE_CORRECTIVES})")

    jreg = need("J_regressor").astype(np.float64)
    if jreg.shape != (NUM_JOINTS, nv):
        raise BodyModelError(f"{name}: J_regressor has shape {jreg.shape}, expected "
                             f"({NUM_JOINTS}, {nv}); SMPL-H and SMPL-X are not supported")

    weights = need("weights").astype(np.float64)
    if weights.shape != (nv, NUM_JOINTS):
        raise BodyModelError(f"{name}: weights has shape {weights.shape}, expected "
                             f"({nv}, {NUM_JOINTS})")
    if weights.min() < -1e-6 or np.abs(weights.sum(1) - 1).max() > 1e-3:
        raise BodyModelError(f"{name}: skinning weights are negative or do not sum to 1")

    faces = need("f")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        raise BodyModelError(f"{name}: faces 'f' has shape {faces.shape} ({faces.dtype}), "
                             "expected (F, 3) integers")
    faces = faces.astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= nv):
        raise BodyModelError(f"{name}: faces index vertices outside 0..{nv - 1}")

    parents = PARENTS.copy()
    if "kintree_table" in arrays:
        kt = need("kintree_table").astype(np.int64)
        if kt.shape != (2, NUM_JOINTS):
            raise BodyModelError(f"{name}: kintree_table has shape {kt.shape}, expected (2, 24)")
        order = np.argsort(kt[1])
        got = kt[0][order]
        got = np.where((got < 0) | (got >= NUM_JOINTS), -1, got)
        if not np.array_equal(got, PARENTS):
            raise BodyModelError(f"{name}: the kinematic tree is not SMPL's")
    elif "parents" in arrays:
        got = need("parents").astype(np.int64)[:NUM_JOINTS]
        if not np.array_equal(np.where(got < 0, -1, got), PARENTS):
            raise BodyModelError(f"{name}: the kinematic tree is not SMPL's")

    h36m = None
    if "J_regressor_h36m" in arrays:
        h36m = need("J_regressor_h36m").astype(np.float64)
        if h36m.shape != (17, nv):
            raise BodyModelError(f"{name}: J_regressor_h36m has shape {h36m.shape}, "
                                 f"expected (17, {nv})")

    return BodyModel(v_template=v_template, shapedirs=shapedirs, posedirs=posedirs,
                     J_regressor=jreg, weights=weights, faces=faces, parents=parents,
                     J_regressor_h36m=h36m, source=source)
