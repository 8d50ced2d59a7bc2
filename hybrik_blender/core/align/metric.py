"""How well the captured 3D joints sit on the person in the picture.

The metric is the reprojection error: the captured joints projected through
the capture camera (pinhole, focal length and principal point of the result)
against the 2D evidence, i.e. the image points that the landmark detector
gave for the same joints. Only joints whose evidence is *visible* count
(confidence >= ``VISIBLE``: mediapipe's landmark visibility, HybrIK's
1 - sigma inside the image). It is given in pixels and as a fraction of the
person box height, per joint and frame, and summarised as medians.

The joints measured are those the character shows: the forward kinematics of
the take's rotations on the rest skeleton that the import builds (the clip's
shape with a body model, the fitted average skeleton without one), placed at
the root translation. The 2D evidence travels in the result as the backend
extras ``uv29`` (N, 29, 2) pixels and ``uv29_confidence`` (N, 29), in the
29-joint order (24 SMPL joints and the 5 HybrIK leaves; confidence 0 where a
backend has no evidence for a joint).
"""
import dataclasses

import numpy as np

from ..body.average import fitted_average_skeleton
from ..body.kinematics import forward_kinematics
from ..body.model import rest_joints_29
from ..body.skeleton import LEAF_PARENTS, PARENTS

VISIBLE = 0.5


def project(points, focal, principal):
    """(..., 3) camera points -> (..., 2) pixels (depth clamped to 1 mm)."""
    p = np.asarray(points, np.float64)
    z = np.maximum(p[..., 2], 1e-3)
    return np.stack([focal[0] * p[..., 0] / z + principal[0],
                     focal[1] * p[..., 1] / z + principal[1]], -1)


def fk29(rotmats, rest29, root):
    """Posed joints (N, 29, 3) and global rotations (N, 24, 3, 3) of local
    rotations (N, 24, 3, 3) on rest joints (N|1, 29, 3), root at (N, 3); the
    leaves move rigidly with their parent joints."""
    rest29 = np.asarray(rest29, np.float64)
    glob, posed = forward_kinematics(rotmats, rest29[..., :24, :], PARENTS, root)
    off = rest29[..., 24:, :] - rest29[..., LEAF_PARENTS, :]
    leaves = posed[:, LEAF_PARENTS] + np.einsum("nkab,nkb->nka", glob[:, LEAF_PARENTS],
                                                np.broadcast_to(off, (len(posed), 5, 3)))
    return np.concatenate([posed, leaves], 1), glob


def character_rest29(result, model=None):
    """(29, 3) the rest skeleton an import builds for `result`."""
    from ..formats.result import clip_betas
    if model is not None:
        return rest_joints_29(model, clip_betas(result))
    return fitted_average_skeleton(result.joints29, result.valid)


def character_joints29(result, model=None):
    """(N, 29, 3) the joints of the character as imported, camera coordinates."""
    rest = character_rest29(result, model)[None]
    joints, _ = fk29(result.rotmats.astype(np.float64), rest,
                     result.root_translation.astype(np.float64))
    return joints


@dataclasses.dataclass
class AlignmentError:
    """Per row and joint: pixel error and error / box height (NaN where the
    evidence is not visible or the row is invalid)."""
    px: np.ndarray
    fraction: np.ndarray

    @property
    def points(self):
        return int(np.isfinite(self.px).sum())

    def median_px(self):
        return float(np.nanmedian(self.px)) if self.points else float("nan")

    def median_fraction(self):
        return float(np.nanmedian(self.fraction)) if self.points else float("nan")

    def summary(self):
        p90 = float(np.nanpercentile(self.fraction, 90)) if self.points else float("nan")
        return {"median_px": self.median_px(), "median_box": self.median_fraction(),
                "p90_box": p90, "points": self.points}


def reprojection_error(joints29, uv, confidence, focal, principal, bbox, valid=None,
                       min_confidence=VISIBLE):
    """:class:`AlignmentError` of joints (N, 29, 3) against evidence uv
    (N, 29, 2) with confidence (N, 29); bbox (N, 4) gives the box heights."""
    px = np.linalg.norm(project(joints29, focal, principal) - np.asarray(uv, np.float64), axis=-1)
    seen = np.asarray(confidence) >= min_confidence
    if valid is not None:
        seen &= np.asarray(valid, bool)[:, None]
    h = np.maximum(np.asarray(bbox, np.float64)[:, 3] - np.asarray(bbox, np.float64)[:, 1], 1.0)
    px = np.where(seen, px, np.nan)
    return AlignmentError(px, px / h[:, None])


def result_alignment(result, model=None, joints29=None):
    """The alignment of a take whose backend recorded its 2D evidence
    (extras ``uv29`` and ``uv29_confidence``); None when it did not."""
    if "uv29" not in result.extras or "uv29_confidence" not in result.extras:
        return None
    joints = character_joints29(result, model) if joints29 is None else joints29
    return reprojection_error(joints, result.extras["uv29"], result.extras["uv29_confidence"],
                              result.focal_length, result.principal_point, result.bbox,
                              result.valid)
