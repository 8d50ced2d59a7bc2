"""Camera rotation from the background, one frame at a time.

:class:`CameraSolver` is fed every decoded frame (its pixels and the boxes or
mask of every person in it) and, at the end, gives the camera track: per
frame the rotation taking that frame's camera coordinates to the first
frame's, the focal length, and whether the camera moved.

Per frame (all on a grey image whose longer side is at most ``work_side``):

1. Features: Shi-Tomasi corners (``goodFeaturesToTrack``) on a *keyframe*,
   outside the people (their boxes, grown by ``box_margin``, or a mask).
2. Tracking: pyramidal Lucas-Kanade from the keyframe straight to the
   current frame, started from where each point was in the previous frame,
   then back again; points whose round trip misses by more than
   ``fb_threshold_px``, that left the image or that now lie on a person are
   dropped. Tracking from the keyframe rather than frame to frame means the
   error does not add up from frame to frame; it only adds up over keyframes.
3. Outliers (things that move by themselves): a RANSAC homography between
   keyframe and frame marks the background points.
4. A new keyframe starts when fewer than ``keep_fraction`` of the keyframe's
   points (or fewer than ``min_tracks``) survive.

At the end (:meth:`CameraSolver.finish`), with every frame's point pairs:

* the focal length, when none was given, is the one for which the pairs are
  best explained by pure rotations (:func:`.geometry.estimate_focal`); it is
  only observable when the camera turned, so below ``focal_min_angle_deg``
  the given or default focal length stays;
* each frame's rotation relative to its keyframe is the robust orthogonal
  Procrustes fit of the bearing vectors (rotation only, 3 parameters, so it
  is less noisy than the orthogonal part of a homography), and keyframes
  chain;
* translation is detected: a camera that moves through the scene (walking
  with it) shows parallax, which no rotation explains. A frame is
  translation-dominated when the background moved by more than
  ``3 x threshold_px`` and fewer than 3/4 of its tracked points follow the
  fitted rotation; when more than ``translation_fraction`` of the frames
  that moved are, the motion is reported and the track falls back to a
  static camera (the motion stays in camera space);
* ``mode="auto"`` keeps a static camera unless the camera turned by more
  than ``static_max_deg`` at some frame, and then only when the background
  was measured well: with fewer than ``min_background`` background points
  (or none) in more than ``weak_fraction`` of the frames, a static camera
  is assumed, with a warning.
"""
import dataclasses

import cv2
import numpy as np

from . import geometry as geo

LK_WINDOW = (15, 15)
LK_LEVELS = 3
LK_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01)
CAMERA_CHOICES = ("static", "auto", "moving")


@dataclasses.dataclass
class CameraEstimate:
    """What :meth:`CameraSolver.finish` found. Pixel values are in the
    video's own pixels; rotations take frame-k camera coordinates to the
    first frame's."""
    frame_index: np.ndarray      # (F,) int64
    rotation: np.ndarray         # (F, 3, 3) as measured (also when not used)
    focal: float                 # px, the focal length used
    focal_estimated: bool
    mode: str                    # "static" or "moving": what the capture uses
    requested: str               # the --camera choice
    max_angle_deg: float         # largest measured turn from the first frame
    translation_frames: float    # fraction of moving frames that show parallax
    lost_frames: int             # frames where the background could not be tracked
    warnings: tuple = ()

    def track(self):
        """The camera track as the result file stores it."""
        from ...core.formats.result import CameraTrack
        n = len(self.frame_index)
        rot = self.rotation if self.mode == "moving" else np.tile(np.eye(3), (n, 1, 1))
        return CameraTrack(np.asarray(self.frame_index, np.int64), np.asarray(rot, np.float64),
                           np.full(n, float(self.focal)), self.mode)


class CameraSolver:
    """Streaming camera-rotation solver; see the module docstring.

    ``focal``: known focal length in pixels (None: estimate it, starting from
    ``focal_guess``); ``mode``: "static", "auto" or "moving"."""

    def __init__(self, width, height, focal=None, focal_guess=None, mode="auto",
                 work_side=640, max_corners=300, min_tracks=15, keep_fraction=0.5,
                 box_margin=0.1, fb_threshold_px=0.5, threshold_px=1.0, store_points=160,
                 static_max_deg=0.5, translation_fraction=0.25, focal_min_angle_deg=3.0,
                 min_background=20, weak_fraction=0.2):
        if mode not in CAMERA_CHOICES:
            raise ValueError(f"camera mode must be one of {', '.join(CAMERA_CHOICES)}")
        self.width, self.height = int(width), int(height)
        self.scale = min(1.0, work_side / max(self.width, self.height))
        self.size = (max(1, int(round(self.width * self.scale))),
                     max(1, int(round(self.height * self.scale))))
        self.principal = ((self.size[0]) / 2.0, (self.size[1]) / 2.0)
        self.focal = None if focal is None else float(focal)
        if focal_guess is None:
            focal_guess = 0.5 * max(width, height) / np.tan(np.radians(65.0) / 2)
        self.focal_guess = float(focal if focal is not None else focal_guess)
        self.mode = mode
        self.max_corners, self.min_tracks = max_corners, min_tracks
        self.keep_fraction, self.box_margin = keep_fraction, box_margin
        self.fb_threshold = fb_threshold_px
        self.threshold = threshold_px
        self.store_points = store_points
        self.static_max_deg = static_max_deg
        self.translation_fraction = translation_fraction
        self.focal_min_angle = focal_min_angle_deg
        self.min_background, self.weak_fraction = min_background, weak_fraction
        self.min_distance = max(5.0, 0.02 * max(self.size))
        self.frames = []       # video frame numbers
        self.keys = []         # per frame: position (in self.frames) of its keyframe, or -1
        self.pairs = []        # per frame: (M, 4) float32 key x, y, frame x, y
        self.inliers = []      # per frame: (M,) bool, RANSAC background points
        self._key = None       # (pyramid, points (K, 1, 2), last points, frame position)
        self._key_count = 0
        self._finished = None  # (frames fed, the estimate of finish())

    # --- per frame -------------------------------------------------------------

    def _grey(self, image):
        g = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if g.shape[1] != self.size[0] or g.shape[0] != self.size[1]:
            g = cv2.resize(g, self.size, interpolation=cv2.INTER_AREA)
        return g

    def background_mask(self, boxes=(), mask=None):
        """uint8 (h, w) work-size image: 255 on the background, 0 on people
        (their boxes grown by box_margin of their size, or `mask` > 0)."""
        w, h = self.size
        out = np.full((h, w), 255, np.uint8)
        for box in boxes if boxes is not None else ():
            x0, y0, x1, y1 = (float(v) * self.scale for v in box)
            mx = self.box_margin * (x1 - x0) + 2
            my = self.box_margin * (y1 - y0) + 2
            # landmark boxes end at the face: hair and hats stand above it
            top = my + 2 * self.box_margin * (y1 - y0)
            out[max(0, int(y0 - top)):max(0, int(np.ceil(y1 + my))),
                max(0, int(x0 - mx)):max(0, int(np.ceil(x1 + mx)))] = 0
        if mask is not None:
            m = np.asarray(mask)
            if m.shape != (h, w):
                m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
            out[m > 0] = 0
        return out

    def _new_key(self, grey, pyramid, background, position):
        pts = cv2.goodFeaturesToTrack(grey, self.max_corners, 0.01, self.min_distance,
                                      mask=background, blockSize=7)
        if pts is None or len(pts) < 8:
            self._key = None
            return
        pts = pts.astype(np.float32)
        self._key = (pyramid, pts, pts.copy(), position)
        self._key_count = len(pts)

    def feed(self, index, image, boxes=(), mask=None):
        """One decoded frame (RGB or grey, the video's size), the boxes
        (x0, y0, x1, y1 in the video's pixels) of all people in it and/or a
        person mask (nonzero = person)."""
        grey = self._grey(np.asarray(image))
        pyramid = grey  # OpenCV's Python binding takes images, not pyramids
        background = self.background_mask(boxes, mask)
        position = len(self.frames)
        self.frames.append(int(index))
        if self._key is None:
            self.keys.append(-1)
            self.pairs.append(np.zeros((0, 4), np.float32))
            self.inliers.append(np.zeros(0, bool))
            self._new_key(grey, pyramid, background, position)
            return
        key_pyr, key_pts, last, key_pos = self._key
        flags = cv2.OPTFLOW_USE_INITIAL_FLOW
        cur, st, _ = cv2.calcOpticalFlowPyrLK(key_pyr, pyramid, key_pts, last.copy(),
                                              winSize=LK_WINDOW, maxLevel=LK_LEVELS,
                                              criteria=LK_CRITERIA, flags=flags)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(pyramid, key_pyr, cur, key_pts.copy(),
                                                winSize=LK_WINDOW, maxLevel=LK_LEVELS,
                                                criteria=LK_CRITERIA, flags=flags)
        c = cur[:, 0]
        w, h = self.size
        ok = (st[:, 0] == 1) & (st2[:, 0] == 1) \
            & (np.linalg.norm(back[:, 0] - key_pts[:, 0], axis=1) < self.fb_threshold) \
            & (c[:, 0] >= 0) & (c[:, 1] >= 0) & (c[:, 0] <= w - 1) & (c[:, 1] <= h - 1)
        xi = np.clip(np.round(c[:, 0]).astype(int), 0, w - 1)
        yi = np.clip(np.round(c[:, 1]).astype(int), 0, h - 1)
        ok &= background[yi, xi] > 0
        inl = np.zeros(len(ok), bool)
        if ok.sum() >= 8:
            _, m = cv2.findHomography(key_pts[ok], cur[ok], cv2.RANSAC,
                                      2.0 * self.threshold, maxIters=500, confidence=0.999)
            if m is not None:
                inl[np.flatnonzero(ok)] = m[:, 0] > 0
        if inl.sum() < 8:  # lost: this frame starts afresh
            self.keys.append(-1)
            self.pairs.append(np.zeros((0, 4), np.float32))
            self.inliers.append(np.zeros(0, bool))
            self._new_key(grey, pyramid, background, position)
            return
        sel = np.flatnonzero(ok)
        if len(sel) > self.store_points:  # an even, deterministic subsample
            sel = sel[np.linspace(0, len(sel) - 1, self.store_points).round().astype(int)]
        self.keys.append(key_pos)
        self.pairs.append(np.concatenate([key_pts[sel, 0], cur[sel, 0]], 1).astype(np.float32))
        self.inliers.append(inl[sel])
        alive = inl
        if alive.sum() < max(self.min_tracks, self.keep_fraction * self._key_count):
            self._new_key(grey, pyramid, background, position)
        else:
            self._key = (key_pyr, key_pts[alive], cur[alive], key_pos)

    # --- the whole clip --------------------------------------------------------

    def _relative(self, focal, chunk=2048):
        """Rotation of every frame relative to its keyframe (F, 3, 3), and
        per point the residual, the motion since the keyframe and whether it
        is a point (F, M); in chunks of frames, so memory stays bounded."""
        rots, resids, motions, ws = [], [], [], []
        for c in range(0, len(self.frames), chunk):
            a, b, w = geo.pad_sets(self.pairs[c:c + chunk], self.store_points)
            a, b, w = (_pad_to(x, self.store_points) for x in (a, b, w))
            inl = np.zeros_like(w)
            for i, m in enumerate(self.inliers[c:c + chunk]):
                inl[i, :len(m)] = m[:inl.shape[1]]
            rot, _ = geo.robust_rotation(a, b, inl, focal, self.principal, self.threshold)
            rot[np.array(self.keys[c:c + chunk]) < 0] = np.eye(3)
            rots.append(rot)
            resids.append(geo.rotation_residual_px(geo.bearings(a, focal, self.principal),
                                                   geo.bearings(b, focal, self.principal),
                                                   rot, focal).astype(np.float32))
            motions.append(np.linalg.norm(a - b, axis=-1).astype(np.float32))
            ws.append(w > 0)
        return (np.concatenate(rots), np.concatenate(resids), np.concatenate(motions),
                np.concatenate(ws))

    def _estimate_focal(self):
        a, b, w = geo.pad_sets(self.pairs, self.store_points)
        inl = np.zeros_like(w)
        for i, m in enumerate(self.inliers):
            inl[i, :len(m)] = m[:inl.shape[1]]
        guess = self.focal_guess * self.scale
        med = _row_median(np.linalg.norm(a - b, axis=-1), inl > 0)
        # the frames that moved most relative to their keyframe say most
        order = np.argsort(-med)[:300]
        order = order[med[order] > np.radians(self.focal_min_angle) * guess]
        if len(order) < 5:
            return None
        f, curvature = geo.estimate_focal(a[order], b[order], inl[order], self.principal, guess,
                                          self.threshold)
        return f / self.scale if curvature > 0.05 else None

    def finish(self):
        """The :class:`CameraEstimate` of everything fed so far (computed
        once: the capture's decoding thread calls it after the last frame,
        beside the last network batches, and the end of the run again)."""
        if self._finished is not None and self._finished[0] == len(self.frames):
            return self._finished[1]
        estimate = self._finish()
        self._finished = (len(self.frames), estimate)
        return estimate

    def _finish(self):
        n = len(self.frames)
        notes = []
        focal = self.focal if self.focal is not None else self.focal_guess
        estimated = False
        if n == 0:
            return CameraEstimate(np.zeros(0, np.int64), np.zeros((0, 3, 3)), focal, False,
                                  "static", self.mode, 0.0, 0.0, 0)
        if self.mode == "static":
            return CameraEstimate(np.asarray(self.frames, np.int64), np.tile(np.eye(3), (n, 1, 1)),
                                  focal, False, "static", self.mode, 0.0, 0.0, 0)
        rel, resid, motion, w = self._relative(focal * self.scale)
        chained = self._chain(rel)
        turned = float(geo.rotation_angle_deg(chained).max())
        if self.focal is None and turned >= self.focal_min_angle:
            f = self._estimate_focal()
            if f is not None:
                focal, estimated = f, True
                rel, resid, motion, w = self._relative(focal * self.scale)
                chained = self._chain(rel)
                turned = float(geo.rotation_angle_deg(chained).max())
        lost = int(np.sum(np.array(self.keys[1:]) < 0))
        # parallax: frames that moved but whose points do not follow a rotation
        live = w > 0
        cnt = np.maximum(live.sum(1), 1)
        explained = np.sum(live & (resid < 2 * self.threshold), 1) / cnt
        moved = _row_median(motion, live)
        moving = moved > 3 * self.threshold
        parallax = moving & (explained < 0.75)
        frac = float(parallax.sum() / max(moving.sum(), 1))
        mode = "moving" if self.mode == "moving" else "static"
        weak = np.array([m.sum() < self.min_background for m in self.inliers[1:]])
        weak_frac = float(weak.mean()) if len(weak) else 0.0
        if self.mode == "auto" and turned > self.static_max_deg:
            if weak_frac > self.weak_fraction:
                notes.append(f"camera: too little background to measure the camera in "
                             f"{100 * weak_frac:.0f}% of the frames; a static camera is assumed "
                             "(--camera moving uses the measured rotation anyway)")
            else:
                mode = "moving"
        if frac > self.translation_fraction and moving.sum() >= 3:
            what = ("the camera moves through the scene (parallax in "
                    f"{100 * frac:.0f}% of the frames where it moved): rotation alone does "
                    "not describe it")
            if self.mode == "auto":
                notes.append(f"camera: {what}; the motion stays in camera space")
                mode = "static"
            else:
                notes.append(f"camera: {what}; the rotations are used as asked (--camera moving)")
        if lost and mode == "moving":
            notes.append(f"camera: the background could not be tracked in {lost} frame(s); "
                         "the camera is held there")
        return CameraEstimate(np.asarray(self.frames, np.int64), chained, float(focal),
                              estimated, mode, self.mode, turned, frac, lost, tuple(notes))

    def _chain(self, rel):
        out = np.empty_like(rel)
        for i, k in enumerate(self.keys):
            if k < 0:
                out[i] = out[i - 1] if i else np.eye(3)
            else:
                out[i] = out[k] @ rel[i]
        return out


def _row_median(values, mask):
    """Median of each row's masked values (0 for a row without any)."""
    out = np.zeros(len(values))
    for i in np.flatnonzero(mask.any(1)):
        out[i] = np.median(values[i][mask[i]])
    return out


def _pad_to(x, m):
    """Pad axis 1 of x with zeros to length m (chunks share one width)."""
    if x.shape[1] >= m:
        return x
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, m - x.shape[1])
    return np.pad(x, pad)
