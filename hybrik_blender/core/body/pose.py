"""Per-frame poses of a take for a body model: SMPL's 24 rotations or
SMPL-X's 55 (body, jaw, eyes, fingers) assembled from the result's fields."""
import numpy as np

from .skeleton import SMPLX_HAND_SLICE, SMPLX_JAW, SMPLX_LEFT_EYE, SMPLX_NUM_JOINTS

SMPLX_FIELDS = ("hand_rotmats", "jaw_rotmat", "eye_rotmats", "expression", "kid")


def is_smplx_take(result):
    """True for a take made for SMPL-X: ``body_model == "smplx"`` or any of
    the SMPL-X-only fields (hands, jaw, eyes, expression, kid) present."""
    return result.body_model == "smplx" or any(getattr(result, k, None) is not None
                                               for k in SMPLX_FIELDS)


def smplx_rotmats(result, hands=True, face=True, rows=None):
    """(N, 55, 3, 3) float64 local rotations in SMPL-X's joint order.

    Rows 0-21 are the result's body rotations (the same joints in SMPL and
    SMPL-X), 22-24 the jaw and eyes (``face``), 25-54 the fingers
    (``hands``); what the take does not carry, or what is switched off, is
    the identity (the model's rest pose: straight fingers, closed jaw).
    rows: optional boolean mask or indices of the frames to take.
    """
    def pick(a):
        a = np.asarray(a, np.float64)
        return a if rows is None else a[rows]

    body = pick(result.rotmats)
    out = np.broadcast_to(np.eye(3), body.shape[:1] + (SMPLX_NUM_JOINTS, 3, 3)).copy()
    out[:, :22] = body[:, :22]
    if face and result.jaw_rotmat is not None:
        out[:, SMPLX_JAW] = pick(result.jaw_rotmat)
    if face and result.eye_rotmats is not None:
        out[:, SMPLX_LEFT_EYE:SMPLX_LEFT_EYE + 2] = pick(result.eye_rotmats)
    if hands and result.hand_rotmats is not None:
        out[:, SMPLX_HAND_SLICE] = pick(result.hand_rotmats)
    return out


def weighted_clip_value(values, result):
    """Confidence-weighted mean over the valid frames of a per-row field
    (like :func:`..formats.result.clip_betas`), float64."""
    valid = np.asarray(result.valid, bool)
    v = np.asarray(values, np.float64)[valid]
    w = np.asarray(result.confidence, np.float64)[valid]
    if not len(v):
        return np.zeros(v.shape[1:])
    if w.sum() <= 0:
        w = np.ones_like(w)
    return np.tensordot(w, v, axes=1) / w.sum()
