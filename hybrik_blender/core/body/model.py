"""SMPL and SMPL-X body models: loading from the official formats, validation,
rest joints.

Three sources give the same :class:`BodyModel`:

* the official ``.pkl`` (Python-2 pickle with chumpy objects), read through
  the restricted unpickler in :mod:`..formats.safe_pickle`; chumpy is not
  needed;
* an ``.npz`` with the same key names (``v_template``, ``shapedirs``,
  ``posedirs``, ``J_regressor``, ``weights``, ``kintree_table``, ``f``; for
  SMPL-X also ``hands_components{l,r}``, ``hands_mean{l,r}``), read with
  ``allow_pickle=False``. Members that hold Python objects (the official
  SMPL-X ``.npz`` stores ``joint2num``/``part2num`` dicts) are skipped, never
  unpickled; array headers are checked before any data is read;
* the ``smpl.*`` buffers that every official HybrIK checkpoint embeds, or the
  ``smplx_layer.*`` buffers of a HybrIK-X checkpoint, read from the torch zip
  archive without torch.

Reading is bounded (see the README's "Limits"): files must be regular, zip
members and ``.npy`` headers are checked before their data are read
(:mod:`..formats.bounded`), pickles and checkpoints go through the limits of
:mod:`..formats.safe_pickle`, only the keys a model uses (``_MODEL_KEYS``)
are read, each ``.npz``/checkpoint array holds at most
``ELEMENTS_PER_VERTEX`` elements per SMPL-X vertex, and every float is
finite and at most ``MAX_VALUE`` in magnitude. Every failure is one
:class:`BodyModelError` line.

The type (``model_type`` "smpl" or "smplx") follows from the vertex count:
6,890 for SMPL, 10,475 for SMPL-X. Arrays are kept in float64 in the model's
own frame: metres, +Y up, the body facing +Z, the subject's left at +X.

Shape components
----------------
SMPL v1.1 ships 300 shape components; HybrIK predicts 10, so only the first
10 are kept, with a warning. Fewer than 10 is an error. SMPL-X stores shape
and expression directions in one ``shapedirs`` array: 10 + 10 components
(v1.0, and the synthetic test model) or 300 + 100 (v1.1); like the ``smplx``
package and HybrIK-X, expressions are read from column 10 or 300, and the
first 10 of each kind are kept.

Children (HybrIK-X's 11th beta)
-------------------------------
HybrIK-X blends towards a children's template (``smplx_kid_template.npy``,
same topology): the template is centred on its own vertex mean and
``kid_dir = (kid - mean(kid)) - v_template`` becomes one more shape
direction with coefficient ``kid``, exactly as ``smplx``'s ``age='kid'`` and
HybrIK-X's layer build it. A HybrIK-X checkpoint carries that direction as
column 10 of its ``shapedirs``; for a model file it is added with
:func:`with_kid_template`.

The 24-joint view
-----------------
Clean-up, ground fitting and the SMPL HybrIK tools work on SMPL's 24 joints
and its five HybrIK leaves. :func:`rest_joints` / :func:`leaf_joints` give
that view for both types: for SMPL-X, joints 0-21 are its own body joints
(same meaning as SMPL's), the two "hand" joints 22/23 are the middle-finger
knuckles (``left_middle1``/``right_middle1``, where SMPL's hand joint sits),
and the leaves are the head top, the middle-finger tips 5058/7794 and the
big-toe tips 5770/8463 (the vertex ids of ``smplx``'s
``vertex_ids['smplx']``, which HybrIK-X uses too). SMPL-X has no agreed head
top vertex, so it is found at load time: the highest rest vertex whose
largest skinning weight is the head's (that works on any SMPL-X-topology
file, the official ones and the synthetic test model alike).
:func:`model_joints` gives all of a model's joints (24 or 55).
"""
import dataclasses
import logging
import os
import warnings

import numpy as np

from ..formats import bounded, safe_pickle
from .skeleton import (LEAF_VERTEX_IDS, NUM_BETAS, NUM_EXPRESSION, NUM_JOINTS,
                       NUM_POSE_CORRECTIVES, PARENTS, SMPL_NUM_VERTICES, SMPLX_JOINT_NAMES,
                       SMPLX_NUM_JOINTS, SMPLX_NUM_POSE_CORRECTIVES, SMPLX_NUM_VERTICES,
                       SMPLX_PARENTS, JOINT_NAMES)

log = logging.getLogger(__name__)

MODEL_TYPES = ("smpl", "smplx")
# SMPL-X vertices used as landmarks (smplx's vertex_ids['smplx'] numbering)
SMPLX_MIDDLE_TIPS = (5058, 7794)
SMPLX_BIG_TOES = (5770, 8463)
SMPLX_FINGER_TIPS = {  # per side: index, middle, pinky, ring, thumb (SMPL-X chain order)
    "left": (4933, 5058, 5286, 5169, 5361), "right": (7669, 7794, 8022, 7905, 8079)}
SMPLX_MOUTH_BOTTOM, SMPLX_PUPILS = 8947, (9448, 9929)
# joints of SMPL-X standing in for SMPL's 24: body 0-21, then left/right middle1
SMPLX_TO_SMPL24 = np.array(list(range(22)) + [28, 43], dtype=np.int64)
SMPLX_HEAD = 15
MAX_ARRAY_BYTES = 1 << 30  # no body-model array is anywhere near 1 GiB


class BodyModelError(ValueError):
    """The file is not a usable SMPL/SMPL-X body model; the message (one
    line) says why."""

    def __init__(self, message=""):
        super().__init__(bounded.one_line(message, 600))


@dataclasses.dataclass(frozen=True, eq=False)
class BodyModel:
    v_template: np.ndarray      # (V, 3)
    shapedirs: np.ndarray       # (V, 3, 10)
    posedirs: np.ndarray        # (V, 3, 9 (J - 1))
    J_regressor: np.ndarray     # (J, V), dense
    weights: np.ndarray         # (V, J)
    faces: np.ndarray           # (F, 3) int64
    parents: np.ndarray = dataclasses.field(default_factory=lambda: PARENTS.copy())
    J_regressor_h36m: np.ndarray = None  # (17, V) when known
    source: str = ""
    model_type: str = "smpl"
    expr_dirs: np.ndarray = None         # (V, 3, 10), SMPL-X
    kid_dir: np.ndarray = None           # (V, 3), SMPL-X with a children's template
    hands_components: np.ndarray = None  # (2, 45, 45) left, right PCA bases (rows)
    hands_mean: np.ndarray = None        # (2, 45) left, right mean hand pose
    leaf_vertex_ids: np.ndarray = None   # (5,) head top, middle tips, big toes

    def __post_init__(self):
        if self.leaf_vertex_ids is None:
            ids = LEAF_VERTEX_IDS if self.model_type == "smpl" else _smplx_leaf_ids(self)
            object.__setattr__(self, "leaf_vertex_ids", np.asarray(ids, np.int64))

    @property
    def is_smplx(self):
        return self.model_type == "smplx"

    @property
    def num_vertices(self):
        return self.v_template.shape[0]

    @property
    def num_betas(self):
        return self.shapedirs.shape[2]

    @property
    def num_joints(self):
        return self.J_regressor.shape[0]

    @property
    def num_expression(self):
        return 0 if self.expr_dirs is None else self.expr_dirs.shape[2]

    @property
    def has_kid(self):
        return self.kid_dir is not None

    @property
    def joint_names(self):
        return SMPLX_JOINT_NAMES if self.is_smplx else JOINT_NAMES

    # All shape-like directions in one array: betas, then the children's
    # direction (when present), then expressions (smplx's own order of
    # concatenation: betas, expression).
    @property
    def all_dirs(self):
        return _cached(self, "_dirs", lambda: np.concatenate(
            [self.shapedirs]
            + ([self.kid_dir[:, :, None]] if self.kid_dir is not None else [])
            + ([self.expr_dirs] if self.expr_dirs is not None else []), axis=2))

    # The joint regressor is linear, so rest joints for any betas are
    # J_template + J_dirs . coefficients: no per-call product over all vertices.
    @property
    def joint_template(self):
        return _cached(self, "_jt", lambda: self.J_regressor @ self.v_template)

    @property
    def joint_shapedirs(self):
        return _cached(self, "_js", lambda: np.einsum("jv,vcb->jcb", self.J_regressor,
                                                      self.shapedirs))

    @property
    def joint_all_dirs(self):
        return _cached(self, "_jd", lambda: np.einsum("jv,vcb->jcb", self.J_regressor,
                                                      self.all_dirs))


def _cached(obj, name, fn):
    value = obj.__dict__.get(name)
    if value is None:
        value = fn()
        object.__setattr__(obj, name, value)
    return value


def _smplx_leaf_ids(model):
    """Head top (highest rest vertex bound mostly to the head), middle-finger
    tips, big toes."""
    owner = np.argmax(model.weights, axis=1)
    head = np.nonzero(owner == SMPLX_HEAD)[0]
    top = int(head[np.argmax(model.v_template[head, 1])]) if len(head) else 0
    return [top, *SMPLX_MIDDLE_TIPS, *SMPLX_BIG_TOES]


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


def shape_coefficients(model, betas, expression=None, kid=None):
    """The coefficients of :attr:`BodyModel.all_dirs`, (..., K), broadcast
    over the leading shapes of betas, expression and kid. Missing expression
    or kid count as zero; an expression on a model without expression
    directions is an error; a kid coefficient without a children's template
    is an error unless it is zero everywhere. (Any object with the arrays of
    a BodyModel works; the SMPL-X ones default to absent.)"""
    kid_dir = getattr(model, "kid_dir", None)
    expr_dirs = getattr(model, "expr_dirs", None)
    parts = [_betas(model, betas)]
    lead = parts[0].shape[:-1]
    if kid is not None:
        kid = np.asarray(kid, np.float64)
        lead = np.broadcast_shapes(lead, kid.shape)
    if expression is not None:
        expression = np.asarray(expression, np.float64)
        lead = np.broadcast_shapes(lead, expression.shape[:-1])
    parts[0] = np.broadcast_to(parts[0], lead + parts[0].shape[-1:])
    if kid_dir is not None:
        k = np.zeros(lead) if kid is None else np.broadcast_to(kid, lead)
        parts.append(k[..., None])
    elif kid is not None and np.any(kid != 0):
        raise ValueError("a kid coefficient needs a body model with a children's template")
    ne = 0 if expr_dirs is None else expr_dirs.shape[2]
    if ne:
        e = np.zeros(lead + (ne,))
        if expression is not None:
            if expression.shape[-1] > ne:
                raise ValueError(f"{expression.shape[-1]} expression coefficients given; "
                                 f"the body model has {ne}")
            e[..., :expression.shape[-1]] = expression
        parts.append(e)
    elif expression is not None and np.any(expression != 0):
        raise ValueError("expression coefficients need an SMPL-X body model")
    return np.concatenate(parts, axis=-1)


def _all_dirs(model):
    dirs = getattr(model, "all_dirs", None)
    return model.shapedirs if dirs is None else dirs


def shaped_vertices(model, betas, expression=None, kid=None):
    """(..., B) betas -> (..., V, 3) rest vertices with shape (and, for
    SMPL-X, expression and children's) blend shapes."""
    c = shape_coefficients(model, betas, expression, kid)
    return model.v_template + np.einsum("vcb,...b->...vc", _all_dirs(model), c)


def model_joints(model, betas, expression=None, kid=None):
    """(..., J, 3) all rest joints of the model (24 for SMPL, 55 for SMPL-X)."""
    c = shape_coefficients(model, betas, expression, kid)
    return model.joint_template + np.einsum("jcb,...b->...jc", model.joint_all_dirs, c)


def rest_joints(model, betas, expression=None, kid=None):
    """(..., B) betas -> (..., 24, 3) rest joints in SMPL's layout (see the
    module docstring for what SMPL-X puts there)."""
    j = model_joints(model, betas, expression, kid)
    return j[..., SMPLX_TO_SMPL24, :] if model.is_smplx else j


def leaf_joints(model, betas, expression=None, kid=None):
    """(..., B) betas -> (..., 5, 3): head top, finger tips and big toes."""
    return vertices_at(model, model.leaf_vertex_ids, betas, expression, kid)


def vertices_at(model, ids, betas, expression=None, kid=None):
    """Rest positions (..., K, 3) of the vertices `ids` for the given shape."""
    ids = np.asarray(ids, np.int64)
    c = shape_coefficients(model, betas, expression, kid)
    return model.v_template[ids] + np.einsum("vcb,...b->...vc", _all_dirs(model)[ids], c)


def rest_joints_29(model, betas, expression=None, kid=None):
    """The 24 SMPL-layout joints followed by the five HybrIK leaves."""
    return np.concatenate([rest_joints(model, betas, expression, kid),
                           leaf_joints(model, betas, expression, kid)], axis=-2)


def smplx_tail_vertex_ids(model):
    """(16,) the vertices that end the SMPL-X bones without a child joint, in
    the order of ``core.blender_space.SMPLX_TAIL_NAMES``: head top, big toes,
    lower lip, pupils, left then right finger tips (index, middle, pinky,
    ring, thumb)."""
    return np.array([model.leaf_vertex_ids[0], *SMPLX_BIG_TOES, SMPLX_MOUTH_BOTTOM,
                     *SMPLX_PUPILS, *SMPLX_FINGER_TIPS["left"], *SMPLX_FINGER_TIPS["right"]],
                    dtype=np.int64)


def rest_points_x(model, betas, expression=None, kid=None):
    """(..., 71, 3): the 55 SMPL-X rest joints and the 16 tail vertices."""
    if not model.is_smplx:
        raise ValueError("rest_points_x needs an SMPL-X body model")
    return np.concatenate([model_joints(model, betas, expression, kid),
                           vertices_at(model, smplx_tail_vertex_ids(model), betas, expression,
                                       kid)], axis=-2)


def hand_pose_from_pca(model, coeffs, side, flat_hand_mean=False):
    """Axis-angle hand pose (..., 15, 3) of one hand from K <= 45 PCA
    coefficients, as smplx computes it: ``coeffs @ components[:K]`` plus the
    mean hand pose unless ``flat_hand_mean``. side: "left" or "right"."""
    if model.hands_components is None:
        raise ValueError("the body model has no hand PCA components")
    s = ("left", "right").index(side)
    coeffs = np.asarray(coeffs, np.float64)
    k = coeffs.shape[-1]
    if k > model.hands_components.shape[1]:
        raise ValueError(f"{k} hand PCA coefficients; the model has "
                         f"{model.hands_components.shape[1]}")
    pose = coeffs @ model.hands_components[s, :k]
    if not flat_hand_mean:
        pose = pose + model.hands_mean[s]
    return pose.reshape(pose.shape[:-1] + (15, 3))


def with_kid_template(model, kid_template):
    """The model with HybrIK-X's children's shape direction from a
    (V, 3) template (array or path to a ``.npy``, read without pickle)."""
    name = "kid template"
    if not model.is_smplx:
        raise BodyModelError(f"{name}: a children's template needs an SMPL-X body model")
    if not isinstance(kid_template, np.ndarray):
        name = bounded.shown(os.path.basename(os.fspath(kid_template)))

        def check(shape, dtype):
            if tuple(shape) != model.v_template.shape:
                raise BodyModelError(f"{name}: shape {bounded.shown(shape)} ({dtype}); "
                                     f"expected {model.v_template.shape} vertices like the "
                                     "body model")
        try:
            kid_template = bounded.read_npy_file(os.fspath(kid_template),
                                                 model.v_template.size * 8, check=check,
                                                 what="children's template")
        except OSError as exc:
            raise BodyModelError(f"'{name}' is not a readable .npy template "
                                 f"({exc.strerror or exc})") from None
        except (bounded.LimitError, bounded.ArchiveError) as exc:
            raise BodyModelError(f"children's template {exc}") from None
    kid = np.asarray(kid_template)
    if not model.is_smplx:
        raise BodyModelError(f"{name}: a children's template needs an SMPL-X body model")
    if kid.dtype.kind not in "fiu" or kid.shape != model.v_template.shape:
        raise BodyModelError(f"{name}: shape {kid.shape} ({kid.dtype}); expected "
                             f"{model.v_template.shape} vertices like the body model")
    kid = kid.astype(np.float64)
    if not np.all(np.isfinite(kid)):
        raise BodyModelError(f"{name}: contains NaN or infinite values")
    if np.abs(kid).max() > MAX_VALUE:
        raise BodyModelError(f"{name}: has values beyond {MAX_VALUE:g}")
    kid_dir = (kid - kid.mean(axis=0)) - model.v_template
    fresh = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
    return BodyModel(**dict(fresh, kid_dir=kid_dir))


def find_kid_template(model_path):
    """``smplx_kid_template.npy`` beside (or one folder above) a model file,
    where HybrIK-X's ``model_files`` layout keeps it; None when absent."""
    folder = os.path.dirname(os.path.abspath(os.fspath(model_path)))
    for f in (folder, os.path.dirname(folder)):
        path = os.path.join(f, "smplx_kid_template.npy")
        if os.path.isfile(path):
            return path
    return None


def load_character_model(path, kid_template=None, model_type=None):
    """A body model for building a character: :func:`load_body_model`, and
    for an SMPL-X file without a children's direction the template given, or
    else ``smplx_kid_template.npy`` found beside it (:func:`find_kid_template`),
    so takes with HybrIK-X's kid coefficient get their shape."""
    model = load_body_model(path, model_type=model_type, kid_template=kid_template)
    if model.is_smplx and not model.has_kid and kid_template is None:
        found = find_kid_template(path)
        if found:
            model = with_kid_template(model, found)
    return model


# --- loading ---------------------------------------------------------------

_CHECKPOINT_KEYS = {
    "smpl.v_template": "v_template", "smpl.shapedirs": "shapedirs",
    "smpl.posedirs": "posedirs", "smpl.J_regressor": "J_regressor",
    "smpl.lbs_weights": "weights", "smpl.faces_tensor": "f",
    "smpl.J_regressor_h36m": "J_regressor_h36m", "smpl.parents": "parents",
}
# HybrIK-X's SMPLXLayer buffers: shapedirs there is 10 betas + the children's
# direction, the expressions are separate.
_CHECKPOINT_KEYS_X = {
    "smplx_layer.v_template": "v_template", "smplx_layer.shapedirs": "shapedirs_kid",
    "smplx_layer.expr_dirs": "expr_dirs", "smplx_layer.posedirs": "posedirs",
    "smplx_layer.J_regressor": "J_regressor", "smplx_layer.lbs_weights": "weights",
    "smplx_layer.faces_tensor": "f", "smplx_layer.parents": "parents",
    "smplx_layer.left_hand_mean": "hands_meanl", "smplx_layer.right_hand_mean": "hands_meanr",
}
_REQUIRED = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "f")


# limits of the body-model readers (see the module docstring)
MAX_PICKLE_BYTES = 2 << 30
MAX_VALUE = 1e6             # |x| of any float in a body model
ELEMENTS_PER_VERTEX = 1500  # SMPL-X v1.1 shapedirs: 3 x 400, posedirs: 3 x 486
_MODEL_VERTICES = (SMPL_NUM_VERTICES, SMPLX_NUM_VERTICES)
LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # torch < 1.6
# the arrays a body model is built from; nothing else in a file is read
_MODEL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "f",
               "kintree_table", "parents", "J_regressor_h36m", "kid_dir", "hands_componentsl",
               "hands_componentsr", "hands_meanl", "hands_meanr")


def _element_limit():
    return ELEMENTS_PER_VERTEX * max(_MODEL_VERTICES)


def load_body_model(path, model_type=None, kid_template=None):
    """Load an SMPL or SMPL-X body model from a .pkl, .npz or HybrIK /
    HybrIK-X checkpoint file. model_type "smpl"/"smplx" refuses the other
    kind; kid_template (path or array) adds HybrIK-X's children's direction.
    Every failure, limits included, is a BodyModelError with one line."""
    path = os.fspath(path)
    name = bounded.shown(os.path.basename(path))
    try:
        with bounded.open_regular(path, "body model") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(16)
    except OSError as exc:
        raise BodyModelError(f"cannot read body model '{name}': "
                             f"{exc.strerror or exc}") from None
    except bounded.LimitError as exc:
        raise BodyModelError(str(exc)) from None
    if size == 0:
        raise BodyModelError(f"'{name}' is empty, not a body model")
    try:
        checkpoint = head.startswith(LEGACY_TORCH_HEAD)
        if head.startswith(b"PK"):
            with bounded.BoundedZip(path, name, what="body model") as zf:
                checkpoint = any(n.endswith("data.pkl") for n in zf.names)
                if not checkpoint:
                    arrays = _npz_arrays(zf, name)
        if checkpoint:
            arrays = _checkpoint_arrays(path, name)
        elif head.startswith(b"PK"):
            pass
        elif head[:1] in (b"\x80", b"(", b"}", b"]"):
            arrays = _pickle_arrays(path, name)
        else:
            raise BodyModelError(f"'{name}' is not an SMPL/SMPL-X model (.pkl, .npz) or a "
                                 "HybrIK checkpoint (.pth)")
        model = body_model_from_arrays(arrays, source=name, model_type=model_type)
        if kid_template is not None:
            model = with_kid_template(model, kid_template)
    except (bounded.LimitError, bounded.ArchiveError) as exc:
        raise BodyModelError(str(exc)) from None
    except OSError as exc:
        raise BodyModelError(f"cannot read body model '{name}': "
                             f"{exc.strerror or exc}") from None
    except MemoryError:
        raise BodyModelError(f"'{name}' needs more memory than is available") from None
    return model


def _pickle_arrays(path, name):
    data = bounded.read_file(path, MAX_PICKLE_BYTES, "body model")
    try:
        obj = safe_pickle.load_smpl_pickle(data)
    except safe_pickle.UnsafePickleError as exc:
        raise BodyModelError(f"'{name}' was refused: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file
        raise BodyModelError(f"'{name}' is not a readable SMPL pickle "
                             f"({type(exc).__name__}: {bounded.one_line(exc, 120)})") from None
    del data
    if not isinstance(obj, dict):
        raise BodyModelError(f"'{name}' holds a {type(obj).__name__}, not an SMPL model dict")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            continue
        if key not in _MODEL_KEYS:
            out.setdefault(key, None)  # listed in messages, never converted
            continue
        try:
            out[key] = safe_pickle.plain_value(value)
        except ValueError as exc:
            if key in _REQUIRED:
                raise BodyModelError(f"'{name}': key '{key}': {exc}") from None
            out.pop(key, None)
    return {k: v for k, v in out.items() if v is not None or k not in _MODEL_KEYS}


def _npz_arrays(zf, name):
    """The body-model members of an .npz (only those: see _MODEL_KEYS), each
    header checked before its data are read; object members (pickles) are
    skipped unless the model needs them, which is an error."""
    members = bounded.npz_members(zf)
    limit = _element_limit()
    out = {key: None for key in members if key not in _MODEL_KEYS}  # names, for messages
    for key in _MODEL_KEYS:
        if key not in members:
            continue
        try:
            shape, _, dtype = zf.npy_header(members[key], MAX_ARRAY_BYTES)
        except bounded.ArchiveError as exc:
            if "Python objects" in str(exc) and key not in _REQUIRED:
                continue
            raise
        count = int(np.prod(shape, dtype=object)) if shape else 1
        if count > limit:
            raise BodyModelError(f"'{name}': '{key}' declares {bounded.shown(shape)}; not a "
                                 "body model")
        out[key] = zf.read_npy(members[key], MAX_ARRAY_BYTES)
    return out


def _checkpoint_arrays(path, name):
    try:
        ckpt = safe_pickle.TorchCheckpoint(path, name)
    except (bounded.LimitError, bounded.ArchiveError, OSError, MemoryError):
        raise
    except safe_pickle.UnsafePickleError as exc:
        raise BodyModelError(f"'{name}' was refused: {exc}") from None
    except (ValueError, TypeError, KeyError, EOFError) as exc:
        raise BodyModelError(f"'{name}' is not a readable checkpoint "
                             f"({bounded.one_line(exc, 160)})") from None
    except Exception as exc:  # noqa: BLE001 - any other unpickling failure
        raise BodyModelError(f"'{name}' is not a readable checkpoint ({type(exc).__name__}: "
                             f"{bounded.one_line(exc, 120)})") from None
    with ckpt:
        return _checkpoint_tensors(ckpt, name)


def _checkpoint_tensors(ckpt, name):
    state = checkpoint_state_dict(ckpt.obj)
    if state is None:
        raise BodyModelError(f"'{name}' holds no state dict")
    out = {}
    for key, ref in state.items():
        if not isinstance(key, str):
            continue
        bare = key.removeprefix("module.")
        target = _CHECKPOINT_KEYS.get(bare) or _CHECKPOINT_KEYS_X.get(bare)
        if target is not None and isinstance(ref, safe_pickle.TensorRef):
            try:
                if ref.numel > _element_limit():
                    raise ValueError(f"shape {ref.shape} is too large for a body model")
                out[target] = ckpt.read(ref)
            except ValueError as exc:
                raise BodyModelError(f"'{name}': tensor '{bounded.shown(key)}' is damaged "
                                     f"({exc})") from None
    if "v_template" not in out:
        raise BodyModelError(f"'{name}' is a checkpoint without embedded SMPL buffers "
                             "(smpl.* or smplx_layer.*); choose an SMPL .pkl or .npz instead")
    if "shapedirs_kid" in out:  # HybrIK-X: 10 betas + the children's direction
        sd = np.asarray(out.pop("shapedirs_kid"))
        if sd.ndim == 3 and sd.shape[2] == NUM_BETAS + 1:
            out["kid_dir"] = sd[:, :, NUM_BETAS]
            sd = sd[:, :, :NUM_BETAS]
        if "expr_dirs" in out:
            ed = np.asarray(out.pop("expr_dirs"))
            if ed.ndim != 3 or sd.ndim != 3 or ed.shape[:2] != sd.shape[:2]:
                raise BodyModelError(f"'{name}': 'smplx_layer.expr_dirs' has shape {ed.shape}, "
                                     f"which does not match the shapedirs {sd.shape}")
            sd = np.concatenate([sd, ed], axis=2)
        out["shapedirs"] = sd
    return out


def checkpoint_state_dict(obj):
    """The state dict inside a checkpoint object: itself or its 'model' entry."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return obj if isinstance(obj, dict) else None


class _Checker:
    def __init__(self, arrays, name):
        self.arrays, self.name = arrays, name

    def fail(self, msg):
        raise BodyModelError(f"{self.name}: {msg}")

    def need(self, key, kind="model"):
        if self.arrays.get(key) is None:
            keys = ", ".join(bounded.shown(k, 40) for k in sorted(map(str, self.arrays))[:12])
            self.fail(f"missing '{key}' (found: {keys}); is this an {kind} model file?")
        try:
            arr = np.asarray(self.arrays[key])
        except Exception:  # noqa: BLE001
            self.fail(f"'{key}' is not an array")
        if arr.dtype == object or arr.dtype.kind not in "fiub":
            self.fail(f"'{key}' is not numeric ({bounded.shown(arr.dtype.str)})")
        if arr.dtype.kind == "f" and arr.size:
            with np.errstate(invalid="ignore"):
                big = np.abs(arr).max()
            if not np.isfinite(big):
                self.fail(f"'{key}' contains NaN or infinite values")
            if big > MAX_VALUE:
                self.fail(f"'{key}' has values beyond {MAX_VALUE:g}")
        return arr


def body_model_from_arrays(arrays, source="", model_type=None):
    """Validate SMPL or SMPL-X arrays (official key names) and build a
    BodyModel; the type follows from the vertex count unless given."""
    name = source or "body model"
    ck = _Checker(arrays, name)
    v_template = ck.need("v_template", "SMPL").astype(np.float64)
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        ck.fail(f"v_template has shape {v_template.shape}, expected (V, 3)")
    nv = v_template.shape[0]
    detected = {SMPL_NUM_VERTICES: "smpl", SMPLX_NUM_VERTICES: "smplx"}.get(nv)
    if model_type not in (None, *MODEL_TYPES):
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    wanted = model_type or detected
    if wanted == "smplx" and nv != SMPLX_NUM_VERTICES:
        ck.fail(f"{nv} vertices; an SMPL-X model has {SMPLX_NUM_VERTICES}")
    if wanted != "smplx" and nv != SMPL_NUM_VERTICES:
        hint = " (an SMPL-X model: choose SMPL-X)" if nv == SMPLX_NUM_VERTICES else \
            f" (SMPL-X has {SMPLX_NUM_VERTICES})"
        ck.fail(f"{nv} vertices{hint}; an SMPL model has {SMPL_NUM_VERTICES}")
    if wanted == "smplx":
        return _smplx_from_arrays(ck, v_template, source)
    return _smpl_from_arrays(ck, v_template, source)


def _keep_first(ck, arr, count, what):
    msg = (f"{ck.name}: the model has {arr.shape[2]} {what} components; the first "
           f"{count} are used")
    warnings.warn(msg, stacklevel=4)
    log.warning(msg)
    return np.ascontiguousarray(arr[:, :, :count])


def _common(ck, v_template, nj, ncorr, parents_ref):
    """posedirs, J_regressor, weights, faces and the tree, checked for nj joints."""
    nv = v_template.shape[0]
    posedirs = ck.need("posedirs").astype(np.float64)
    if posedirs.shape == (ncorr, nv * 3):  # HybrIK's layout
        posedirs = posedirs.T.reshape(nv, 3, ncorr)
    if posedirs.shape != (nv, 3, ncorr):
        ck.fail(f"posedirs has shape {posedirs.shape}, expected ({nv}, 3, {ncorr})")

    jreg = ck.need("J_regressor").astype(np.float64)
    if jreg.shape != (nj, nv):
        other = " (SMPL-H has 52, SMPL-X 55)" if nj == NUM_JOINTS else ""
        ck.fail(f"J_regressor has shape {jreg.shape}, expected ({nj}, {nv}){other}")

    weights = ck.need("weights").astype(np.float64)
    if weights.shape != (nv, nj):
        ck.fail(f"weights has shape {weights.shape}, expected ({nv}, {nj})")
    if weights.min() < -1e-6 or np.abs(weights.sum(1) - 1).max() > 1e-3:
        ck.fail("skinning weights are negative or do not sum to 1")

    faces = ck.need("f")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        ck.fail(f"faces 'f' has shape {faces.shape} ({faces.dtype}), expected (F, 3) integers")
    faces = faces.astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= nv):
        ck.fail(f"faces index vertices outside 0..{nv - 1}")

    kind = "SMPL-X" if nj == SMPLX_NUM_JOINTS else "SMPL"
    if "kintree_table" in ck.arrays:
        kt = ck.need("kintree_table").astype(np.int64)
        if kt.shape != (2, nj):
            ck.fail(f"kintree_table has shape {kt.shape}, expected (2, {nj})")
        order = np.argsort(kt[1])
        got = kt[0][order]
        got = np.where((got < 0) | (got >= nj), -1, got)
        if not np.array_equal(got, parents_ref):
            ck.fail(f"the kinematic tree is not {kind}'s")
    elif "parents" in ck.arrays:
        got = ck.need("parents").astype(np.int64)[:nj]
        if not np.array_equal(np.where(got < 0, -1, got), parents_ref):
            ck.fail(f"the kinematic tree is not {kind}'s")
    return dict(posedirs=posedirs, J_regressor=jreg, weights=weights, faces=faces,
                parents=parents_ref.copy())


def _smpl_from_arrays(ck, v_template, source):
    nv = v_template.shape[0]
    shapedirs = ck.need("shapedirs").astype(np.float64)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (nv, 3):
        ck.fail(f"shapedirs has shape {shapedirs.shape}, expected ({nv}, 3, betas)")
    nb = shapedirs.shape[2]
    if nb < NUM_BETAS:
        ck.fail(f"only {nb} shape components; HybrIK needs {NUM_BETAS}")
    if nb > NUM_BETAS:
        msg = (f"{ck.name}: the model has {nb} shape components; HybrIK predicts "
               f"{NUM_BETAS}, so the first {NUM_BETAS} are used")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
        shapedirs = np.ascontiguousarray(shapedirs[:, :, :NUM_BETAS])
    common = _common(ck, v_template, NUM_JOINTS, NUM_POSE_CORRECTIVES, PARENTS)

    h36m = None
    if "J_regressor_h36m" in ck.arrays:
        h36m = ck.need("J_regressor_h36m").astype(np.float64)
        if h36m.shape != (17, nv):
            ck.fail(f"J_regressor_h36m has shape {h36m.shape}, expected (17, {nv})")
    return BodyModel(v_template=v_template, shapedirs=shapedirs, J_regressor_h36m=h36m,
                     source=source, **common)


def _smplx_from_arrays(ck, v_template, source):
    nv = v_template.shape[0]
    shapedirs = ck.need("shapedirs", "SMPL-X").astype(np.float64)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (nv, 3):
        ck.fail(f"shapedirs has shape {shapedirs.shape}, expected ({nv}, 3, shape + "
                "expression components)")
    k = shapedirs.shape[2]
    # smplx's rule: fewer than 300 + 100 columns is the 10 + 10 layout
    if k == 2 * NUM_BETAS:
        split = NUM_BETAS
    elif k >= 300 + NUM_EXPRESSION:
        split = 300
    else:
        ck.fail(f"shapedirs has {k} components; an SMPL-X model has 10 shape + 10 "
                "expression (v1.0) or 300 + 100 (v1.1)")
    expr_dirs = shapedirs[:, :, split:]
    shapedirs = shapedirs[:, :, :split]
    if split > NUM_BETAS:
        shapedirs = _keep_first(ck, shapedirs, NUM_BETAS, "shape")
    if expr_dirs.shape[2] > NUM_EXPRESSION:
        expr_dirs = _keep_first(ck, expr_dirs, NUM_EXPRESSION, "expression")
    common = _common(ck, v_template, SMPLX_NUM_JOINTS, SMPLX_NUM_POSE_CORRECTIVES,
                     SMPLX_PARENTS)

    kid_dir = None
    if "kid_dir" in ck.arrays:
        kid_dir = ck.need("kid_dir").astype(np.float64)
        if kid_dir.shape != (nv, 3):
            ck.fail(f"the children's direction has shape {kid_dir.shape}, expected ({nv}, 3)")

    comps, means = [], []
    for side in "lr":
        c = ck.arrays.get(f"hands_components{side}")
        m = ck.arrays.get(f"hands_mean{side}")
        if c is not None:
            c = ck.need(f"hands_components{side}").astype(np.float64)
            if c.shape != (45, 45):
                ck.fail(f"hands_components{side} has shape {c.shape}, expected (45, 45)")
            comps.append(c)
        if m is not None:
            m = ck.need(f"hands_mean{side}").astype(np.float64).reshape(-1)
            if m.shape != (45,):
                ck.fail(f"hands_mean{side} has {m.size} values, expected 45")
            means.append(m)
    if len(comps) == 1 or len(means) == 1:
        ck.fail("hand PCA data for one hand only (need hands_*l and hands_*r)")
    return BodyModel(v_template=v_template, shapedirs=shapedirs, source=source,
                     model_type="smplx", expr_dirs=np.ascontiguousarray(expr_dirs),
                     kid_dir=kid_dir, hands_components=np.stack(comps) if comps else None,
                     hands_mean=np.stack(means) if means else None, **common)
