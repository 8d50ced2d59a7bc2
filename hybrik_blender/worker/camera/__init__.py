"""Camera motion from the background of the video (see solver.py).

The capture's hooks: :func:`start_camera` before the frames flow (it replays
the frames a resumed run keeps, so a resumed camera track equals an
uninterrupted one), ``camera.feed(index, rgb, boxes)`` per decoded frame from
the producer, :func:`finish_camera` once all frames are in.
"""
import numpy as np

from .solver import CAMERA_CHOICES, CameraEstimate, CameraSolver

__all__ = ["CAMERA_CHOICES", "CameraEstimate", "CameraSolver", "finish_camera", "start_camera"]


def start_camera(opts, info, default_focal, source, kept_rows=()):
    """A solver for this run (None for ``--camera static``), already fed
    with the frames of `kept_rows` (dicts with index, valid, bbox) when a
    run resumes."""
    mode = getattr(opts, "camera", "auto") or "auto"
    if mode not in CAMERA_CHOICES:
        raise ValueError(f"--camera must be one of {', '.join(CAMERA_CHOICES)}, got '{mode}'")
    if mode == "static":
        return None
    solver = CameraSolver(info.width, info.height, focal=opts.focal_length,
                          focal_guess=default_focal, mode=mode)
    if kept_rows:
        boxes = {}
        for r in kept_rows:
            boxes.setdefault(int(r["index"]), [])
            if r["valid"]:
                boxes[int(r["index"])].append(np.asarray(r["bbox"], np.float64))
        first, last = min(boxes), max(boxes)
        for index, _, rgb in source.frames(first, last + 1):
            if index in boxes:
                solver.feed(index, rgb, boxes[index])
    return solver


def finish_camera(solver, frame_index, default_focal):
    """The :class:`CameraEstimate` of the run; for a static camera (no
    solver) an identity track over the rows' frames."""
    if solver is None:
        fi = np.asarray(frame_index, np.int64)
        return CameraEstimate(fi, np.tile(np.eye(3), (len(fi), 1, 1)), float(default_focal),
                              False, "static", "static", 0.0, 0.0, 0)
    return solver.finish()
