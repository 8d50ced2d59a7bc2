"""The SMPL-X body model as HybrIK-X uses it: loading, and a batched torch
layer (shape, IK, skinning, the 127 output joints).

Where the model comes from:

* an official ``SMPLX_NEUTRAL.npz``/``.pkl`` with the children's template
  ``smplx_kid_template.npy`` of HybrIK-X's ``model_files``
  (:func:`load_smplx_model`): the arrays are read and validated by the core
  loader (:func:`hybrik_blender.core.body.model.load_body_model`), which also
  forms the children's direction; only the 51 face-landmark faces and
  weights, which the core model does not keep, are read here (header
  checked, ``allow_pickle=False``);
* the ``smplx_layer.*`` buffers every official HybrIK-X checkpoint embeds
  (:func:`smplx_model_from_state`): the whole layer, the children's
  direction included, so nothing else is needed.

As in the official layer, the shape space has 11 directions: the 10 betas
and, as the 11th, the children's template centred on its own vertex mean
minus ``v_template`` (formed in float64); the 10 expression directions are
components 10-19 of a 20-component file (300-309 of a 400-component one).
The torch layer rounds every array to float32, also when it runs in float64,
exactly as the official layer does (the landmark barycentric weights
excepted, which it reads at the layer's precision).

The torch layer (:class:`TorchSMPLX`) reproduces the official
``SMPLXLayer.hybrik``: rest points from the shaped mesh (expression
included), the IK of :mod:`.ikx`, forward kinematics, pose correctives and
linear blend skinning, and the 127 output joints (the 55 joints, 21 mesh
vertices, 51 face landmarks), everything centred on the root joint.
"""
import dataclasses
import os

import numpy as np
import torch

from ...core.body import model as core_model
from ...core.body.skeleton import SMPLX_NUM_VERTICES, SMPLX_PARENTS
from . import ikx

NUM_BETAS = 10             # HybrIK-X predicts 10 betas + the children's coefficient
NUM_EXPRESSION = 10
NUM_LANDMARKS = 51
MOUTH_BOTTOM_FACE = 19731  # HybrIK-X takes the mouth bottom as a corner of this face
MOUTH_BOTTOM_VERTEX = 8947
# the 16 leaves after the 55 joints (HybrIK-X's LEAF_INDICES order)
LEAF_NAMES = ("left_big_toe", "right_big_toe", "mouth_bottom", "left_pupil", "right_pupil",
              "left_index_tip", "left_middle_tip", "left_pinky_tip", "left_ring_tip",
              "left_thumb_tip", "right_index_tip", "right_middle_tip", "right_pinky_tip",
              "right_ring_tip", "right_thumb_tip", "mouth_top")
LEAF_INDICES = np.array([5770, 8463, 8947, 9448, 9929, 4933, 5058, 5286, 5169, 5361,
                         7669, 7794, 8022, 7905, 8079, 8990], dtype=np.int64)
# the 21 vertices smplx appends to the 55 joints (smplx's vertex_ids['smplx'])
EXTRA_VERTEX_NAMES = ("nose", "right_eye", "left_eye", "right_ear", "left_ear",
                      "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
                      "right_small_toe", "right_heel", "left_thumb_tip", "left_index_tip",
                      "left_middle_tip", "left_ring_tip", "left_pinky_tip", "right_thumb_tip",
                      "right_index_tip", "right_middle_tip", "right_ring_tip", "right_pinky_tip")
EXTRA_VERTICES = np.array([9120, 9929, 9448, 616, 6, 5770, 5780, 8846, 8463, 8474, 8635,
                           5361, 4933, 5058, 5169, 5286, 8079, 7669, 7794, 7905, 8022],
                          dtype=np.int64)
NUM_OUTPUT_JOINTS = 55 + len(EXTRA_VERTICES) + NUM_LANDMARKS   # 127
KID_TEMPLATE_NAME = "smplx_kid_template.npy"
MAX_FILE_BYTES = 2 << 30


class SMPLXModelError(core_model.BodyModelError):
    """The file is not a usable SMPL-X model for HybrIK-X; the message says why."""


@dataclasses.dataclass(frozen=True, eq=False)
class SMPLXModel:
    """HybrIK-X's SMPL-X layer as numpy arrays (official shapes), with the
    core :class:`~hybrik_blender.core.body.model.BodyModel` it was made from
    (``body``: what clean-up, hands and the character use)."""
    v_template: np.ndarray      # (V, 3)
    shapedirs: np.ndarray       # (V, 3, 11): 10 betas + the children's direction
    expr_dirs: np.ndarray       # (V, 3, 10)
    posedirs: np.ndarray        # (486, V * 3), HybrIK's layout
    J_regressor: np.ndarray     # (55, V)
    weights: np.ndarray         # (V, 55)
    faces: np.ndarray           # (F, 3) int64
    lmk_faces_idx: np.ndarray   # (51,) int64
    lmk_bary_coords: np.ndarray  # (51, 3)
    head_top: int               # vertex id of the head top (the core model's leaf 24)
    body: object = None
    source: str = ""

    @property
    def num_vertices(self):
        return self.v_template.shape[0]

    def rest_points(self, betas=None, expression=None):
        """(71, 3) rest joints and leaves of a shape (float64, numpy)."""
        v = self.v_template.astype(np.float64)
        if betas is not None:
            v = v + self.shapedirs @ np.asarray(betas, np.float64)
        if expression is not None:
            v = v + self.expr_dirs @ np.asarray(expression, np.float64)
        return np.concatenate([self.J_regressor @ v, v[LEAF_INDICES]])


def smplx_model_from_body_model(bm, lmk_faces_idx, lmk_bary_coords):
    """A core SMPL-X BodyModel with its children's direction, and the face
    landmarks -> SMPLXModel, checked for what HybrIK-X reads."""
    name = bm.source or "SMPL-X model"
    if not bm.is_smplx:
        raise SMPLXModelError(f"{name}: an SMPL model; HybrIK-X needs SMPL-X "
                              "(10475 vertices, e.g. SMPLX_NEUTRAL.npz)")
    if not bm.has_kid:
        raise SMPLXModelError(
            f"{name}: HybrIK-X also needs the children's template '{KID_TEMPLATE_NAME}' "
            "(from HybrIK's model_files); put it next to the model or give --kid-template")
    if bm.num_expression != NUM_EXPRESSION or bm.num_betas < NUM_BETAS:
        raise SMPLXModelError(f"{name}: {bm.num_betas} shape and {bm.num_expression} "
                              f"expression components; HybrIK-X reads {NUM_BETAS} + "
                              f"{NUM_EXPRESSION}")
    faces = np.asarray(bm.faces, np.int64)
    if len(faces) <= MOUTH_BOTTOM_FACE or faces[MOUTH_BOTTOM_FACE, 2] != MOUTH_BOTTOM_VERTEX:
        raise SMPLXModelError(f"{name}: not the SMPL-X topology (face {MOUTH_BOTTOM_FACE} "
                              f"must end at the mouth-bottom vertex {MOUTH_BOTTOM_VERTEX})")
    lmk = np.asarray(lmk_faces_idx)
    bary = np.asarray(lmk_bary_coords)
    if (lmk.shape != (NUM_LANDMARKS,) or lmk.dtype.kind not in "iu" or lmk.min() < 0
            or lmk.max() >= len(faces)):
        raise SMPLXModelError(f"{name}: 'lmk_faces_idx' must be {NUM_LANDMARKS} face indices")
    if bary.shape != (NUM_LANDMARKS, 3) or not np.all(np.isfinite(bary)):
        raise SMPLXModelError(f"{name}: 'lmk_bary_coords' must be ({NUM_LANDMARKS}, 3) finite")
    nv = bm.num_vertices
    return SMPLXModel(
        v_template=bm.v_template,
        shapedirs=np.concatenate([bm.shapedirs[:, :, :NUM_BETAS], bm.kid_dir[:, :, None]], 2),
        expr_dirs=bm.expr_dirs, posedirs=bm.posedirs.reshape(nv * 3, -1).T,
        J_regressor=bm.J_regressor, weights=bm.weights, faces=faces,
        lmk_faces_idx=lmk.astype(np.int64), lmk_bary_coords=bary.astype(np.float64),
        head_top=int(bm.leaf_vertex_ids[0]), body=bm, source=name)


_LANDMARKS = {"lmk_faces_idx": (NUM_LANDMARKS,), "lmk_bary_coords": (NUM_LANDMARKS, 3)}


def read_landmarks(path):
    """(lmk_faces_idx, lmk_bary_coords) of an official SMPL-X .npz or .pkl,
    through the same bounded readers as the model (core.formats.bounded):
    in an .npz only these two members are read, each header checked first."""
    from ...core.formats import bounded, safe_pickle
    path = os.fspath(path)
    name = bounded.shown(os.path.basename(path))
    out = {}
    try:
        with bounded.open_regular(path, "body model") as fh:
            head = fh.read(4)
        if head.startswith(b"PK"):
            with bounded.BoundedZip(path, name, what="body model") as zf:
                members = bounded.npz_members(zf)
                for key, shape in _LANDMARKS.items():
                    if key not in members:
                        raise SMPLXModelError(f"{name}: missing '{key}' (the face landmarks "
                                              "HybrIK-X's outputs use)")

                    def check(got, dtype, key=key, shape=shape):
                        if tuple(got) != shape:
                            raise SMPLXModelError(f"{name}: '{key}' has shape {tuple(got)} "
                                                  f"({dtype}), expected {shape}")
                    out[key] = zf.read_npy(members[key], 1 << 20, "iuf", check)
        else:
            data = bounded.read_file(path, MAX_FILE_BYTES, "body model")
            try:
                obj = safe_pickle.load_smpl_pickle(data)
                out = {k: np.asarray(safe_pickle.plain_value(obj[k])) for k in _LANDMARKS}
            except Exception as exc:  # noqa: BLE001 - the core loader already vetted the file
                raise SMPLXModelError(f"{name}: no readable face landmarks "
                                      f"({bounded.one_line(exc, 200)})") from None
    except (bounded.LimitError, bounded.ArchiveError) as exc:
        raise SMPLXModelError(str(exc)) from None
    except OSError as exc:
        raise SMPLXModelError(f"{name}: cannot read the file ({exc.strerror or exc})") from None
    return out["lmk_faces_idx"], out["lmk_bary_coords"]


find_kid_template = core_model.find_kid_template


def load_smplx_model(path, kid_template=None):
    """An official SMPL-X model file (.npz or .pkl) and the children's template
    (a path or a (10475, 3) array; default: :func:`find_kid_template`) ->
    SMPLXModel. Raises a BodyModelError (a ValueError) with one line."""
    path = os.fspath(path)
    if kid_template is None:
        kid_template = find_kid_template(path)
    bm = core_model.load_body_model(path, model_type="smplx", kid_template=kid_template)
    return smplx_model_from_body_model(bm, *read_landmarks(path))


def _state_array(state, key):
    v = state[key]
    return v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)


def has_smplx_state(state):
    keys = ("v_template", "shapedirs", "expr_dirs", "posedirs", "J_regressor", "lbs_weights",
            "faces_tensor", "lmk_faces_idx", "lmk_bary_coords")
    return all(f"smplx_layer.{k}" in state for k in keys)


def kid_template_from_state(state):
    """The centred children's template that an official checkpoint's
    embedded layer was built from: its 11th shape direction plus its
    template (the float32 values, widened)."""
    sd = _state_array(state, "smplx_layer.shapedirs").astype(np.float64)
    vt = _state_array(state, "smplx_layer.v_template").astype(np.float64)
    if sd.shape != (SMPLX_NUM_VERTICES, 3, NUM_BETAS + 1) or vt.shape != (SMPLX_NUM_VERTICES, 3):
        raise SMPLXModelError("the checkpoint's embedded SMPL-X layer has no children's direction")
    return sd[:, :, NUM_BETAS] + vt


def smplx_model_from_state(state, source="checkpoint"):
    """The ``smplx_layer.*`` buffers of an official HybrIK-X checkpoint (torch
    tensors or arrays) -> SMPLXModel, validated by the core model checks."""
    if not has_smplx_state(state):
        raise SMPLXModelError(f"{source}: has no embedded SMPL-X layer; give an SMPL-X model "
                              "file (SMPLX_NEUTRAL.npz)")
    arrays = {target: _state_array(state, key)
              for key, target in core_model._CHECKPOINT_KEYS_X.items() if key in state}
    sd = arrays.pop("shapedirs_kid")      # 10 betas + the children's direction
    if sd.ndim != 3 or sd.shape[2] != NUM_BETAS + 1:
        raise SMPLXModelError(f"{source}: 'smplx_layer.shapedirs' has shape {sd.shape}, "
                              f"expected (10475, 3, {NUM_BETAS + 1})")
    arrays["kid_dir"] = sd[:, :, NUM_BETAS]
    arrays["shapedirs"] = np.concatenate([sd[:, :, :NUM_BETAS], arrays.pop("expr_dirs")], 2)
    bm = core_model.body_model_from_arrays(arrays, source=source, model_type="smplx")
    return smplx_model_from_body_model(bm, _state_array(state, "smplx_layer.lmk_faces_idx"),
                                       _state_array(state, "smplx_layer.lmk_bary_coords"))


def layer_state(model):
    """The model as the ``smplx_layer.*`` buffers of an official checkpoint
    (float32 tensors; the buffers HybrIK-X's loader reads)."""
    f32 = lambda a: torch.tensor(np.asarray(a, np.float32))  # noqa: E731
    return {
        "smplx_layer.v_template": f32(model.v_template),
        "smplx_layer.shapedirs": f32(model.shapedirs),
        "smplx_layer.expr_dirs": f32(model.expr_dirs),
        "smplx_layer.posedirs": f32(model.posedirs),
        "smplx_layer.J_regressor": f32(model.J_regressor),
        "smplx_layer.lbs_weights": f32(model.weights),
        "smplx_layer.faces_tensor": torch.tensor(model.faces, dtype=torch.int64),
        "smplx_layer.lmk_faces_idx": torch.tensor(model.lmk_faces_idx, dtype=torch.int64),
        "smplx_layer.lmk_bary_coords": f32(model.lmk_bary_coords),
        "smplx_layer.parents": torch.tensor(SMPLX_PARENTS),
        "smplx_layer.extended_parents": torch.tensor(ikx.PARENTS71),
        "smplx_layer.children_map": torch.tensor(ikx.CHILDREN71),
    }


# --- the torch layer -----------------------------------------------------------

def _fk_levels():
    depth = np.zeros(55, np.int64)
    for i in range(1, 55):
        depth[i] = depth[SMPLX_PARENTS[i]] + 1
    return [(torch.tensor(ix), torch.tensor(SMPLX_PARENTS[ix]))
            for d in range(1, depth.max() + 1)
            for ix in [[i for i in range(1, 55) if depth[i] == d]]]


_FK_LEVELS = _fk_levels()
_PARENTS55 = torch.as_tensor(SMPLX_PARENTS)


def rotation_to_quaternion(rot):
    """(..., 3, 3) -> (..., 4) (w, x, y, z), the case selection of the
    official ``rotation_matrix_to_quaternion`` (from kornia) that HybrIK-X's
    ``theta_quat`` output uses."""
    r = rot.transpose(-1, -2)
    m = lambda i, j: r[..., i, j]  # noqa: E731
    eps = 1e-6
    d2 = m(2, 2) < eps
    d0_d1 = m(0, 0) > m(1, 1)
    d0_nd1 = m(0, 0) < -m(1, 1)
    t0 = 1 + m(0, 0) - m(1, 1) - m(2, 2)
    q0 = torch.stack([m(1, 2) - m(2, 1), t0, m(0, 1) + m(1, 0), m(2, 0) + m(0, 2)], -1)
    t1 = 1 - m(0, 0) + m(1, 1) - m(2, 2)
    q1 = torch.stack([m(2, 0) - m(0, 2), m(0, 1) + m(1, 0), t1, m(1, 2) + m(2, 1)], -1)
    t2 = 1 - m(0, 0) - m(1, 1) + m(2, 2)
    q2 = torch.stack([m(0, 1) - m(1, 0), m(2, 0) + m(0, 2), m(1, 2) + m(2, 1), t2], -1)
    t3 = 1 + m(0, 0) + m(1, 1) + m(2, 2)
    q3 = torch.stack([t3, m(1, 2) - m(2, 1), m(2, 0) - m(0, 2), m(0, 1) - m(1, 0)], -1)
    c0 = (d2 & d0_d1)[..., None].to(rot.dtype)
    c1 = (d2 & ~d0_d1)[..., None].to(rot.dtype)
    c2 = (~d2 & d0_nd1)[..., None].to(rot.dtype)
    c3 = (~d2 & ~d0_nd1)[..., None].to(rot.dtype)
    q = q0 * c0 + q1 * c1 + q2 * c2 + q3 * c3
    t = t0[..., None] * c0 + t1[..., None] * c1 + t2[..., None] * c2 + t3[..., None] * c3
    return q / torch.sqrt(t) * 0.5


class TorchSMPLX:
    """An :class:`SMPLXModel` as torch tensors, for batched HybrIK-X IK and
    skinning. ``dtype`` float64 widens the float32-rounded arrays (as the
    official float64 layer does)."""

    def __init__(self, model, dtype=torch.float32, device="cpu"):
        def T(a):
            a32 = np.ascontiguousarray(np.asarray(a, np.float32))
            return torch.as_tensor(a32).to(device=device, dtype=dtype)
        self.model, self.dtype, self.device = model, dtype, torch.device(device)
        self.v_template = T(model.v_template)
        nv = model.num_vertices
        dirs = np.concatenate([np.asarray(model.shapedirs, np.float32),
                               np.asarray(model.expr_dirs, np.float32)], axis=2)
        self.shapedirs = T(dirs.reshape(nv * 3, -1).T)                  # (21, V*3)
        self.J_regressor = T(model.J_regressor)                          # (55, V)
        self.posedirs = T(model.posedirs)                                # (486, V*3)
        self.weights = T(model.weights)                                  # (V, 55)
        lmk_faces = np.asarray(model.faces)[np.asarray(model.lmk_faces_idx)]
        self.lmk_vertices = torch.as_tensor(lmk_faces.astype(np.int64), device=self.device)
        # the official layer reads the landmark weights without the float32
        # rounding of the other arrays
        self.lmk_bary = torch.as_tensor(np.asarray(model.lmk_bary_coords, np.float64)).to(
            device=device, dtype=dtype)
        self.leaf_idx = torch.as_tensor(LEAF_INDICES, device=self.device)
        self.extra_idx = torch.as_tensor(EXTRA_VERTICES, device=self.device)
        self.head_top = torch.as_tensor(model.head_top, device=self.device)
        # the vertices the outputs read, for skinning without the whole mesh
        sub = np.unique(np.concatenate([LEAF_INDICES, EXTRA_VERTICES, lmk_faces.reshape(-1),
                                        [int(self.head_top)]]))
        pos = np.full(nv, -1, np.int64)
        pos[sub] = np.arange(len(sub))
        self.subset_idx = torch.as_tensor(sub, device=self.device)
        self._subset_pos = torch.as_tensor(pos, device=self.device)
        cols = (sub[:, None] * 3 + np.arange(3)).reshape(-1)
        self._subset_posedirs = self.posedirs[:, torch.as_tensor(cols, device=self.device)]
        self._subset_weights = self.weights[self.subset_idx]

    def to(self, dtype=None, device=None):
        return TorchSMPLX(self.model, dtype or self.dtype, device or self.device)

    def shaped(self, betas, expression):
        """(B, 11), (B, 10) -> v_shaped (B, V, 3)."""
        coef = torch.cat([betas, expression], -1).to(self.dtype)
        return self.v_template + (coef @ self.shapedirs).reshape(coef.shape[0], -1, 3)

    def rest_points(self, v_shaped):
        """(B, V, 3) -> (B, 71, 3): regressed joints, then the leaf vertices."""
        joints = torch.einsum("bvc,jv->bjc", v_shaped, self.J_regressor)
        return torch.cat([joints, v_shaped[:, self.leaf_idx]], 1)

    def forward_kinematics(self, rot, rest55):
        """Local rotations (B, 55, 3, 3), rest joints (B, 55, 3) -> global
        rotations and posed joints (the root stays at its rest position)."""
        rel = rest55 - rest55[:, _PARENTS55.clamp_min(0).to(rest55.device)]
        glob = torch.empty_like(rot)
        posed = torch.empty_like(rest55)
        glob[:, 0] = rot[:, 0]
        posed[:, 0] = rest55[:, 0]
        for idx, par in _FK_LEVELS:
            gp = glob[:, par]
            glob[:, idx] = gp @ rot[:, idx]
            posed[:, idx] = posed[:, par] + (gp @ rel[:, idx, :, None])[..., 0]
        return glob, posed

    def skin(self, rot, v_shaped, rest55, subset=False):
        """Posed joints (B, 55, 3) and vertices (B, V, 3), pose correctives
        included, root at its rest position. With ``subset`` only the
        vertices the outputs read (:attr:`subset_idx`: leaves, the 21 extra
        vertices, the landmark triangles, the head top) are skinned, in that
        order: per vertex the same arithmetic, a fraction of the cost."""
        b = rot.shape[0]
        glob, posed = self.forward_kinematics(rot, rest55)
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        feat = (rot[:, 1:] - eye).reshape(b, -1)
        if subset:
            v_shaped = v_shaped[:, self.subset_idx]
            posedirs, weights = self._subset_posedirs, self._subset_weights
        else:
            posedirs, weights = self.posedirs, self.weights
        v_posed = v_shaped + (feat @ posedirs).reshape(b, -1, 3)
        trans = posed - (glob @ rest55[..., None])[..., 0]
        a = torch.cat([glob.reshape(b, 55, 9), trans], -1)              # (B, 55, 12)
        t = torch.einsum("vj,bjk->bvk", weights, a)
        verts = (t[..., :9].reshape(b, -1, 3, 3) @ v_posed[..., None])[..., 0] + t[..., 9:]
        return posed, verts

    def _pick(self, verts, subset, idx):
        """Rows ``idx`` (mesh vertex ids) of full or subset vertices."""
        return verts[:, self._subset_pos[idx] if subset else idx]

    def output_joints(self, joints55, vertices, subset=False):
        """The layer's 127 joints: 55 joints, 21 vertices, 51 face landmarks."""
        tri = self._pick(vertices, subset, self.lmk_vertices)
        lmk = torch.einsum("blfc,lf->blc", tri, self.lmk_bary)
        return torch.cat([joints55, self._pick(vertices, subset, self.extra_idx), lmk], 1)

    def hybrik(self, betas, expression, pose_skeleton, phis, naive=False, vertices=True,
               joints_only=False):
        """``SMPLXLayer.hybrik`` in eval mode: (B, 11) betas, (B, 10)
        expression, (B, 71, 3) target points (metres, root-relative), (B, 54, 2)
        twists -> dict of rot_mats (B, 55, 3, 3), joints (B, 127, 3), joints55,
        leaves (B, 16, 3) and head_top (B, 3) of the posed mesh, vertices
        (B, V, 3) with ``vertices``, all centred on the root joint; theta_quat
        (B, 55, 4). ``joints_only``: rot_mats and joints55 alone (what the
        camera refinement reads; the joints do not depend on the skinning)."""
        dtype = self.dtype
        v_shaped = self.shaped(betas.to(dtype), expression.to(dtype))
        rest = self.rest_points(v_shaped)
        rot = ikx.solve(pose_skeleton.to(dtype), rest, phis.to(dtype), naive=naive)
        if joints_only:
            _, joints55 = self.forward_kinematics(rot, rest[:, :55])
            return {"rot_mats": rot, "joints55": joints55 - joints55[:, :1]}
        subset = not vertices
        joints55, verts = self.skin(rot, v_shaped, rest[:, :55], subset=subset)
        root = joints55[:, :1]
        joints = self.output_joints(joints55, verts, subset) - root
        verts = verts - root
        out = {"rot_mats": rot, "joints": joints, "joints55": joints[:, :55],
               "leaves": self._pick(verts, subset, self.leaf_idx),
               "head_top": self._pick(verts, subset, self.head_top[None])[:, 0],
               "theta_quat": rotation_to_quaternion(rot)}
        if vertices:
            out["vertices"] = verts
        return out
