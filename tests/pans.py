"""Synthetic camera pans made from real photos, with a known truth.

A large real photo (``leuven.jpg``, a street in Leuven from Debian's
opencv-doc) is the image plane of a reference camera with focal length f and
its principal point at the photo's centre. A camera turned by R_k (camera-k
coordinates -> reference coordinates) with the same focal length sees pixel
x_k where the photo has ``K_ref R_k K^-1 x_k``; each frame is that warp.

A real person cut-out (``person_cutout.png``, from opencv-doc's
basketball1.png, masked with mediapipe's selfie segmentation) is pasted into
the photo before the warp, so it belongs to the scene: standing still it
keeps its place in the world while the camera turns; walking it slides
across the photo.
"""
import os

import cv2
import numpy as np

from hybrik_blender.core.rotations import axis_angle_to_matrix

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
BACKGROUND = os.path.join(DATA, "leuven.jpg")
PERSON = os.path.join(DATA, "person_cutout.png")


def euler_yxz(yaw, pitch, roll):
    """Rotation (..., 3, 3): yaw about the camera's y (down) axis, then pitch
    about x, then roll about z, all in radians."""
    ry = axis_angle_to_matrix(np.stack([0 * yaw, yaw, 0 * yaw], -1))
    rx = axis_angle_to_matrix(np.stack([pitch, 0 * pitch, 0 * pitch], -1))
    rz = axis_angle_to_matrix(np.stack([0 * roll, 0 * roll, roll], -1))
    return ry @ rx @ rz


def pan_path(n, yaw_deg=12.0, pitch_deg=5.0, roll_deg=4.0, cycles=(1.0, 1.5, 2.0)):
    """(n, 3, 3) a smooth yaw/pitch/roll sweep starting at identity."""
    t = np.arange(n) / max(n - 1, 1)
    yaw = np.radians(yaw_deg) * np.sin(2 * np.pi * cycles[0] * t)
    pitch = np.radians(pitch_deg) * np.sin(2 * np.pi * cycles[1] * t)
    roll = np.radians(roll_deg) * np.sin(2 * np.pi * cycles[2] * t)
    return euler_yxz(yaw, pitch, roll)


def load_canvas(scale=1.0):
    img = cv2.imread(BACKGROUND)
    if scale != 1.0:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return img


def paste(canvas, person_rgba, x, y_bottom, height):
    """Alpha-blend the cut-out into canvas (BGR) with its feet at
    (x centre, y_bottom), `height` pixels tall; returns its box."""
    h0, w0 = person_rgba.shape[:2]
    w = max(1, int(round(w0 * height / h0)))
    p = cv2.resize(person_rgba, (w, int(height)), interpolation=cv2.INTER_AREA)
    x0, y0 = int(round(x - w / 2)), int(round(y_bottom - height))
    x1, y1 = x0 + w, y0 + int(height)
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x1, canvas.shape[1]), min(y1, canvas.shape[0])
    sub = p[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    a = sub[..., 3:].astype(np.float32) / 255
    region = canvas[cy0:cy1, cx0:cx1].astype(np.float32)
    canvas[cy0:cy1, cx0:cx1] = (a * sub[..., :3] + (1 - a) * region).round().astype(np.uint8)
    return np.array([x0, y0, x1, y1], np.float64)


def render_pan(rotations, size=(320, 240), focal=None, canvas_scale=1.0, person=None,
               person_height=0.55, walk_px=0.0, canvas=None):
    """Frames (BGR uint8) of a camera turning by `rotations` over the photo.

    person: None, or "still"/"walk": the cut-out pasted into the photo,
    standing below the reference view's centre (walking `walk_px` photo
    pixels to the right over the clip). Returns (frames, focal, person boxes
    per frame (n, 4) in frame pixels or None)."""
    w, h = size
    if focal is None:
        focal = 0.5 * max(w, h) / np.tan(np.radians(65.0) / 2)
    base = load_canvas(canvas_scale) if canvas is None else canvas
    ch, cw = base.shape[:2]
    k = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1.0]])
    k_ref = np.array([[focal, 0, cw / 2], [0, focal, ch / 2], [0, 0, 1.0]])
    cut = cv2.imread(PERSON, cv2.IMREAD_UNCHANGED) if person else None
    frames, boxes = [], []
    n = len(rotations)
    for i, rot in enumerate(rotations):
        img = base
        if cut is not None:
            img = base.copy()
            shift = walk_px * i / max(n - 1, 1) if person == "walk" else 0.0
            box = paste(img, cut, cw / 2 + shift, ch / 2 + 0.5 * person_height * h,
                        person_height * h)
        hmat = k_ref @ rot @ np.linalg.inv(k)
        frames.append(cv2.warpPerspective(img, hmat, (w, h), flags=cv2.INTER_LINEAR
                                          | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT))
        if cut is not None:
            corners = np.array([[box[0], box[1], 1], [box[2], box[1], 1], [box[0], box[3], 1],
                                [box[2], box[3], 1]])
            p = (np.linalg.inv(hmat) @ corners.T).T
            p = p[:, :2] / p[:, 2:]
            boxes.append([*p.min(0), *p.max(0)])
    return frames, focal, (np.array(boxes) if boxes else None)


def angle_deg(a, b):
    """Angle between rotations a and b (..., 3, 3), degrees."""
    r = np.swapaxes(a, -1, -2) @ b
    tr = np.trace(r, axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1, 1)))


def render_walk_with_camera(n, size=(320, 240), speed_m=0.02, near_m=2.0, far_m=8.0,
                            forward=False, focal=None):
    """Frames of a camera that moves (no rotation) past a near and a far
    layer of the photo: the lower 45% of the view is a plane `near_m` away,
    the rest one `far_m` away. Sideways (default) or `forward`, `speed_m`
    metres per frame. Parallax is what tells translation from rotation."""
    w, h = size
    if focal is None:
        focal = 0.5 * max(w, h) / np.tan(np.radians(65.0) / 2)
    canvas = load_canvas()
    ch, cw = canvas.shape[:2]
    near_img = cv2.flip(canvas, 1)
    frames = []
    split = int(0.55 * h)
    for i in range(n):
        d = speed_m * i
        layers = []
        for img, depth in ((canvas, far_m), (near_img, near_m)):
            if forward:
                s = depth / max(depth - d, 1e-3)
                m = np.array([[s, 0, w / 2 - s * w / 2 + (cw - w) / 2 * 0],
                              [0, s, h / 2 - s * h / 2]], np.float64)
                src = img[(ch - h) // 2:(ch - h) // 2 + h, (cw - w) // 2:(cw - w) // 2 + w]
                layers.append(cv2.warpAffine(src, m, (w, h), borderMode=cv2.BORDER_REFLECT))
            else:
                shift = focal * d / depth
                m = np.array([[1, 0, -(cw - w) / 2 - shift], [0, 1, -(ch - h) / 2]], np.float64)
                layers.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT))
        f = layers[0].copy()
        f[split:] = layers[1][split:]
        frames.append(f)
    return frames, focal
