"""The last step of every backend, over one track's finished arrays: hidden
joints hold a plausible pose (core.motion.hidden), then the character is fitted
to the 2D evidence (core.align.refine), and the result gets its per-joint
confidence and the evidence itself (extras ``uv29``, ``uv29_confidence``)
for the alignment metric."""
import logging

import numpy as np

from ..core.align.metric import fk29, reprojection_error
from ..core.align.refine import align_to_evidence, evidence_weight
from ..core.body.skeleton import CHILDREN_29
from ..core.motion.hidden import hold_hidden_joints

log = logging.getLogger(__name__)


def joint_confidence_from_29(conf29):
    """(N, 24) rotation confidence from per-joint evidence (N, 29): a joint's
    rotation is as well seen as the less visible of the joint and the child
    its bone points at."""
    c = np.asarray(conf29, np.float64)
    child = CHILDREN_29[:24]
    return np.minimum(c[:, :24], c[:, child])


def settle_and_align(fields, rest29, uv29, conf29, joint_conf, valid, time_s, bbox, focal,
                     principal, body_model=None, betas=None, hold=True, align=True):
    """Update a backend's `fields` (rotmats, root_translation, joints29,
    betas) in place; returns (fields, extras, summary). `betas`: the clip's
    starting shape when a body model is given (fitted to the evidence, then
    written to every valid row)."""
    valid = np.asarray(valid, bool)
    rot = np.asarray(fields["rotmats"], np.float64)
    raw, _ = fk29(rot, rest29, fields["root_translation"])
    before = reprojection_error(raw, uv29, conf29, focal, principal, bbox, valid)
    if hold:
        rot = hold_hidden_joints(rot, evidence_weight(joint_conf), valid, time_s)
    out = align_to_evidence(rot, rest29, fields["root_translation"], uv29, conf29, valid,
                            focal, principal, bbox, model=body_model, betas=betas,
                            options=None if align else _translation_only())
    fields["rotmats"] = out["rotmats"]
    fields["root_translation"] = out["root_translation"]
    fields["joints29"] = out["joints29"]
    if out["betas"] is not None:
        b = np.array(fields["betas"], np.float64)
        b[valid] = out["betas"]
        fields["betas"] = b
    fields["joint_confidence"] = np.clip(joint_conf, 0, 1)
    # before: the backend alone, as it was without this step
    summary = {"before": before.summary(), "after": out["after"].summary()}
    log.info("2D alignment: median %.1f px (%.1f%% of the box) -> %.1f px (%.1f%%)",
             summary["before"]["median_px"], 100 * summary["before"]["median_box"],
             summary["after"]["median_px"], 100 * summary["after"]["median_box"])
    extras = {"uv29": np.asarray(uv29, np.float32),
              "uv29_confidence": np.clip(conf29, 0, 1).astype(np.float32)}
    return fields, extras, summary


def _translation_only():
    from ..core.align.refine import RefineOptions
    return RefineOptions(shape=False, pose=False)
