"""Follow one person through a clip with the pose detector and landmarker
that ship inside the mediapipe 0.10.21 wheel (``model_complexity=1``; the
other complexities download models at run time and are not offered).

The detector is person-only, so a car or a dog is never followed. mediapipe
keeps its own region of interest from frame to frame. On top of it a
continuity gate stops a jump to somebody else: after a loss, a new detection
is accepted only near the last known box, within a radius that grows with the
time the person has been missing; after ``accept_anywhere_s`` seconds anybody
is accepted again (the subject may have left and come back elsewhere). A
frame whose detection fails the gate is marked invalid, never made up, and
mediapipe is reset so that it detects afresh.

The tracker is also reset at fixed chunk boundaries (``CHUNK`` frames) so
that the output of a chunk depends only on its own frames and the last box
before it: a resumed capture then reproduces an uninterrupted one exactly.
"""
import dataclasses
import logging

import numpy as np

from ..landmarks.mp import load as load_mediapipe

log = logging.getLogger(__name__)
CHUNK = 256
NUM_LANDMARKS = 33


@dataclasses.dataclass
class Detection:
    image_xy: np.ndarray    # (33, 2) pixels
    visibility: np.ndarray  # (33,)
    world: np.ndarray       # (33, 3) metres, hip-centred, camera-aligned axes
    box: np.ndarray         # (4,) x0, y0, x1, y1 pixels (tight, with a margin)
    score: float


def landmark_box(image_xy, visibility, width, height, margin=0.1):
    """Tight box around the visible landmarks, grown by `margin` of its size
    on each side (landmarks sit inside the silhouette), clipped to the image."""
    vis = visibility > 0.3
    pts = image_xy[vis] if vis.sum() >= 4 else image_xy
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    # the head top is above every face landmark
    box = np.array([x0 - mx, y0 - my - 0.5 * max(mx, my), x1 + mx, y1 + my])
    return np.clip(box, 0, [width, height, width, height]).astype(np.float64)


def box_gate(box, last_box, frames_missing, fps, accept_anywhere_s=2.0):
    """True if `box` can be the same person as `last_box`."""
    if last_box is None or frames_missing / fps >= accept_anywhere_s:
        return True
    size = max(last_box[2] - last_box[0], last_box[3] - last_box[1], 1.0)
    radius = size * (0.5 + 1.5 * frames_missing / fps)
    centre = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])  # noqa: E731
    return float(np.linalg.norm(centre(box) - centre(last_box))) <= radius


class PersonTracker:
    """One person, frame by frame. ``__call__(index, rgb)`` -> Detection|None."""

    def __init__(self, fps, width, height, min_confidence=0.5):
        try:
            mp = load_mediapipe()
        except ImportError as exc:
            raise RuntimeError("mediapipe is not installed in the worker environment") from exc
        self._pose_cls = mp.solutions.pose.Pose
        self._conf = min_confidence
        self.fps, self.width, self.height = fps, width, height
        self._pose = None
        self._fresh = True
        self.last_box = None
        self.last_seen = None

    def _new_pose(self):
        if self._pose is not None:
            self._pose.close()
        self._fresh = True
        self._pose = self._pose_cls(static_image_mode=False, model_complexity=1,
                                    smooth_landmarks=True, enable_segmentation=False,
                                    min_detection_confidence=self._conf,
                                    min_tracking_confidence=self._conf)

    def restart(self, last_box=None, last_seen=None):
        """Start afresh (chunk boundary or resume) remembering the last box."""
        self._new_pose()
        self.last_box = None if last_box is None else np.asarray(last_box, float)
        self.last_seen = last_seen

    def close(self):
        if self._pose is not None:
            self._pose.close()
            self._pose = None

    def __call__(self, index, rgb):
        if self._pose is None or index % CHUNK == 0:
            self.restart(self.last_box, self.last_seen)
        res = self._pose.process(rgb)
        if res.pose_landmarks is None or res.pose_world_landmarks is None:
            return None
        lm = res.pose_landmarks.landmark
        image_xy = np.array([[p.x * self.width, p.y * self.height] for p in lm])
        visibility = np.array([p.visibility for p in lm])
        world = np.array([[p.x, p.y, p.z] for p in res.pose_world_landmarks.landmark])
        box = landmark_box(image_xy, visibility, self.width, self.height)
        missing = np.inf if self.last_seen is None else index - self.last_seen - 1
        fresh, self._fresh = self._fresh, False
        if self.last_box is not None and (missing > 0 or fresh) and not box_gate(
                box, self.last_box, max(missing, 0), self.fps):
            log.info("frame %d: detection far from the tracked person, ignored", index)
            self._new_pose()
            return None
        self.last_box, self.last_seen = box, index
        score = float(np.clip(np.mean(np.sort(visibility)[-17:]), 0, 1))
        return Detection(image_xy, visibility, world, box, score)
