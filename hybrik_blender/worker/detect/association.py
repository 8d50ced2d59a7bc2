"""Assignment of detections to tracks: an optimal (Hungarian) matching on a
cost built from box overlap, landmark agreement and motion."""
import numpy as np

from .detector import box_iou

INFEASIBLE = 1e6


def hungarian(cost):
    """Minimum-cost assignment for a rectangular (n, m) cost matrix: the
    pairs (row, col), at most min(n, m) of them. Shortest augmenting paths
    with potentials (O(n^2 m)); entries >= INFEASIBLE are never returned."""
    cost = np.asarray(cost, np.float64)
    n, m = cost.shape
    if n == 0 or m == 0:
        return []
    transposed = n > m
    if transposed:
        cost = cost.T
        n, m = m, n
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, np.int64)      # p[j]: row matched to column j (1-based), 0 = none
    way = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    pairs = [(int(p[j]) - 1, j - 1) for j in range(1, m + 1) if p[j] > 0]
    pairs = [(c, r) if transposed else (r, c) for r, c in pairs]
    cost_of = (lambda r, c: cost[c, r]) if transposed else (lambda r, c: cost[r, c])
    return sorted((r, c) for r, c in pairs if cost_of(r, c) < INFEASIBLE)


def centre_distance(a, b):
    """(A, B) distance of box centres in units of the first boxes' heights."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    h = np.maximum(a[:, 3] - a[:, 1], 1.0)
    return np.linalg.norm(ca[:, None] - cb[None], axis=-1) / h[:, None]


def landmarks_inside(image_xy, visibility, boxes):
    """(B,) fraction of the visible landmarks that lie inside each box."""
    vis = visibility > 0.5
    pts = image_xy[vis] if vis.sum() >= 4 else image_xy
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    inside = ((pts[None, :, 0] >= b[:, None, 0]) & (pts[None, :, 0] <= b[:, None, 2])
              & (pts[None, :, 1] >= b[:, None, 1]) & (pts[None, :, 1] <= b[:, None, 3]))
    return inside.mean(1)


def track_detection_cost(track_boxes, landmarks, det_boxes, max_distance=1.0, min_iou=0.1):
    """(T, D) cost: (1 - IoU) + 0.5 * centre distance (in track heights)
    + 0.5 * (1 - landmarks inside the detection) where the track has
    landmarks this frame. Pairs that neither overlap (IoU < min_iou) nor lie
    close (distance > max_distance) are infeasible."""
    t = np.asarray(track_boxes, np.float64).reshape(-1, 4)
    d = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    if not len(t) or not len(d):
        return np.zeros((len(t), len(d)))
    iou = box_iou(t, d)
    dist = centre_distance(t, d)
    cost = (1 - iou) + 0.5 * np.minimum(dist, 2.0)
    for i, lm in enumerate(landmarks):
        if lm is not None:
            cost[i] += 0.5 * (1 - landmarks_inside(lm[0], lm[1], d))
        else:
            cost[i] += 0.25
    cost[(iou < min_iou) & (dist > max_distance)] = INFEASIBLE
    return cost
