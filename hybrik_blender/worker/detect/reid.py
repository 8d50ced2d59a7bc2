"""Appearance for re-identification after a gap: a colour histogram of the
torso (hue x saturation, plus a coarse value histogram for dark or grey
clothes), compared by the Bhattacharyya distance (0 same, 1 disjoint)."""
import cv2
import numpy as np

H_BINS, S_BINS, V_BINS = 8, 4, 4
SIZE = H_BINS * S_BINS + V_BINS

# mediapipe Pose landmark indices
_SHOULDERS, _HIPS = (11, 12), (23, 24)


def torso_box(box, image_xy=None, visibility=None):
    """The torso region: between the shoulders and the hips when the
    landmarks see them, else the middle of the person box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if image_xy is not None and visibility is not None and \
            np.all(visibility[list(_SHOULDERS + _HIPS)] > 0.5):
        pts = image_xy[list(_SHOULDERS + _HIPS)]
        tx0, ty0 = pts.min(0)
        tx1, ty1 = pts.max(0)
        if tx1 - tx0 > 2 and ty1 - ty0 > 2:
            return np.array([tx0, ty0, tx1, ty1])
    w, h = x1 - x0, y1 - y0
    return np.array([x0 + 0.3 * w, y0 + 0.2 * h, x0 + 0.7 * w, y0 + 0.55 * h])


def torso_histogram(rgb, box, image_xy=None, visibility=None):
    """(SIZE,) float32 histogram, summing to 1 (zeros if the region is empty)."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = torso_box(box, image_xy, visibility)
    x0, x1 = int(np.clip(np.floor(x0), 0, w)), int(np.clip(np.ceil(x1), 0, w))
    y0, y1 = int(np.clip(np.floor(y0), 0, h)), int(np.clip(np.ceil(y1), 0, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros(SIZE, np.float32)
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2HSV)
    hs = cv2.calcHist([hsv], [0, 1], None, [H_BINS, S_BINS], [0, 180, 0, 256]).ravel()
    v = cv2.calcHist([hsv], [2], None, [V_BINS], [0, 256]).ravel()
    hist = np.concatenate([hs, v]).astype(np.float64)
    return (hist / max(hist.sum(), 1e-9)).astype(np.float32)


def appearance_distance(a, b):
    """Bhattacharyya distance of two histograms (each normalised to sum 1)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    sa, sb = a.sum(), b.sum()
    if sa <= 0 or sb <= 0:
        return 1.0
    bc = np.sum(np.sqrt((a / sa) * (b / sb)))
    return float(np.sqrt(max(0.0, 1.0 - bc)))
