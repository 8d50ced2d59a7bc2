"""Ground plane from the feet, and the camera -> Z-up world transform.

Assumption: a static camera and a flat floor. Then the soles of the planted
feet, seen over the whole clip, all lie on one plane in camera coordinates.

Foot points
-----------
Joints alone do not say where the sole is (the ankle joint is ~7 cm above the
floor, the HybrIK toe leaf sits on the toe's surface), so each foot gets two
*sole points* taken from the shaped rest mesh: the heel (the lowest, rearmost
vertices bound to the ankle) and the toe (the lowest, foremost vertices bound
to the foot joint). They move rigidly with their joint. The floor is where
these points rest; a character standing on z = 0 therefore has its mesh
soles on the floor, not its joints.

Floor fit
---------
1. up = -y of the camera (an upright camera) as the first guess;
2. per frame and foot, the lowest sole point along ``up``; candidates are
   the frames where it is both low (lowest ``low_quantile`` of that foot's
   heights) and slow (below the foot's median speed);
3. a weighted plane fit through the candidates, regularised towards the
   previous ``up`` (a person walking on a line only constrains the tilt along
   the line, the prior fixes the other one), with Huber-style reweighting
   against outliers; steps 2-3 are repeated a few times;
4. the plane is finally lowered to a low quantile of the candidates' signed
   distances, so the planted soles rest on it rather than straddle it.

World frame (Blender convention)
--------------------------------
Z is the floor normal (up), the origin is the floor point right below the
camera (so the camera sits at (0, 0, height)), Y is the camera's viewing
direction projected on the floor, X = Y x Z (the camera's right). With an
untilted camera at height h this is ``homogeneous(CAMERA_TO_BLENDER)``
translated up by h. The 4x4 ``camera_to_world`` maps camera points to world
points and is what :func:`..blender_space.pose_channels` accepts.
"""
import dataclasses

import numpy as np

from ..blender_space import homogeneous, rigid_inverse
from ..body.model import leaf_joints, rest_joints, shaped_vertices
from ..body.skeleton import LEAF_PARENTS, PARENTS

LEFT_ANKLE, RIGHT_ANKLE, LEFT_FOOT, RIGHT_FOOT = 7, 8, 10, 11
# Sole points: (joint they move with, foot index 0 = left / 1 = right)
SOLE_JOINTS = np.array([LEFT_ANKLE, LEFT_FOOT, RIGHT_ANKLE, RIGHT_FOOT])
SOLE_FOOT = np.array([0, 0, 1, 1])
# Joints of each foot used for speeds and skating: ankle, foot, toe leaf (29-index)
FOOT_JOINTS_29 = np.array([[7, 10, 27], [8, 11, 28]])


def sole_points_rest(model, betas, band=0.01, kid=None):
    """(4, 3) rest positions (SMPL frame) of the left heel, left toe, right
    heel, right toe, from the shaped mesh: among the vertices mostly bound to
    the ankle (heel) or foot joint (toe) and within ``band`` metres of that
    group's lowest vertex, the rearmost (heel) or foremost (toe) one, with
    its height set to the group's lowest."""
    verts = shaped_vertices(model, np.asarray(betas, np.float64), kid=kid)
    owner = np.argmax(model.weights, axis=1)
    out = np.empty((4, 3))
    for k, j in enumerate(SOLE_JOINTS):
        v = verts[owner == j]
        if len(v) == 0:  # unusual model: fall back to the joint itself
            out[k] = rest_joints(model, betas, kid=kid)[j]
            continue
        low = v[v[:, 1] <= v[:, 1].min() + band]
        heel = j in (LEFT_ANKLE, RIGHT_ANKLE)
        pick = low[np.argmin(low[:, 2])] if heel else low[np.argmax(low[:, 2])]
        out[k] = [pick[0], v[:, 1].min(), pick[2]]
    return out


@dataclasses.dataclass(frozen=True)
class Skeleton:
    """Rest data of one shape, used by the clean-up: rest joints (24, 3),
    leaves (5, 3) and sole points (4, 3), SMPL frame."""
    joints: np.ndarray
    leaves: np.ndarray
    soles: np.ndarray

    @classmethod
    def from_model(cls, model, betas, kid=None):
        """Rest data of an SMPL or SMPL-X model (its 24-joint view, see
        core.body.model); kid: HybrIK-X's children's coefficient, for an
        SMPL-X model with a children's template."""
        betas = np.asarray(betas, np.float64)
        return cls(rest_joints(model, betas, kid=kid), leaf_joints(model, betas, kid=kid),
                   sole_points_rest(model, betas, kid=kid))

    @classmethod
    def from_rest29(cls, rest29):
        """Without a mesh (the built-in average skeleton): each heel sits
        below its ankle at the toes' height, a quarter of the ankle-toe
        distance behind the ankle; the toes are the big-toe leaves."""
        j = np.asarray(rest29, np.float64)
        soles = np.empty((4, 3))
        for k, (ankle, toe) in enumerate(((7, 27), (7, 27), (8, 28), (8, 28))):
            reach = j[toe, 2] - j[ankle, 2]
            heel = k % 2 == 0
            soles[k] = ([j[ankle, 0], j[toe, 1], j[ankle, 2] - 0.25 * reach] if heel
                        else j[toe])
        return cls(j[:24], j[24:], soles)


def attached_points(glob, posed, rest_joints_, points_rest, point_joints):
    """Points moving rigidly with joints: posed[j] + G[j] (p_rest - J_rest[j]).
    glob (N, 24, 3, 3), posed (N, 24, 3) -> (N, K, 3)."""
    offsets = np.asarray(points_rest) - rest_joints_[point_joints]
    return posed[:, point_joints] + np.einsum("nkab,kb->nka", glob[:, point_joints], offsets)


def joint_major_fk(rotmats, rest, root_position, parents=PARENTS):
    """Same result as :func:`..kinematics.forward_kinematics`, about twice as
    fast on long clips: it works on joint-major (J, N, 3, 3) copies so that
    every per-joint product runs on contiguous memory."""
    rot = np.ascontiguousarray(np.moveaxis(np.asarray(rotmats, np.float64), -3, 0))
    rest = np.asarray(rest, np.float64)
    glob = np.empty_like(rot)
    posed = np.empty(rot.shape[:-1])
    glob[0] = rot[0]
    posed[0] = root_position
    for i in range(1, len(parents)):
        p = parents[i]
        np.matmul(glob[p], rot[i], out=glob[i])
        posed[i] = posed[p] + glob[p] @ (rest[i] - rest[p])
    return np.moveaxis(glob, 0, -3), np.moveaxis(posed, 0, -2)


def posed_skeleton(rotmats, skeleton, root_position):
    """Forward kinematics in camera coordinates.

    Returns glob (N, 24, 3, 3), joints29 (N, 29, 3) (the leaves rigidly
    attached to their parent joints) and soles (N, 4, 3).
    """
    glob, posed = joint_major_fk(rotmats, skeleton.joints, root_position)
    leaves = attached_points(glob, posed, skeleton.joints, skeleton.leaves, LEAF_PARENTS)
    soles = attached_points(glob, posed, skeleton.joints, skeleton.soles, SOLE_JOINTS)
    return glob, np.concatenate([posed, leaves], axis=1), soles


# --- floor ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Floor:
    """A plane in camera coordinates: height(p) = normal . p + offset
    (normal is unit and points up, away from the floor)."""
    normal: np.ndarray
    offset: float
    num_support: int = 0

    def height(self, points):
        return np.asarray(points) @ self.normal + self.offset

    @property
    def camera_height(self):
        return float(self.offset)

    def camera_to_world(self):
        return floor_camera_to_world(self.normal, self.offset)


def floor_camera_to_world(normal, offset):
    """4x4 rigid map camera -> Z-up world with the floor at z = 0; see the
    module docstring for the axes and origin."""
    z = np.asarray(normal, np.float64)
    z = z / np.linalg.norm(z)
    fwd = np.array([0.0, 0.0, 1.0])
    y = fwd - (fwd @ z) * z
    if np.linalg.norm(y) < 1e-6:  # camera looking straight down or up
        y = np.array([0.0, 1.0, 0.0]) - z[1] * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    rot = np.stack([x, y, z])  # rows: world axes in camera coordinates
    return homogeneous(rot, np.array([0.0, 0.0, float(offset)]))


def _fit_plane(points, weights, prior, reg):
    c = np.average(points, axis=0, weights=weights)
    d = points - c
    cov = (d * weights[:, None]).T @ d / weights.sum()
    lam = reg ** 2
    n = np.linalg.solve(cov + lam * np.eye(3), lam * prior)
    n /= np.linalg.norm(n)
    if n @ prior < 0:
        n = -n
    return n, -float(n @ c)


def estimate_floor(soles, valid=None, fps=30.0, iterations=4, low_quantile=0.35,
                   prior_up=(0.0, -1.0, 0.0), prior_spread_m=0.05, huber_m=0.02,
                   rest_quantile=0.1, weights=None, min_seen_frames=10):
    """Fit the floor plane to the feet.

    soles (N, 4, 3): sole points in camera coordinates (:func:`posed_skeleton`).
    weights (N, 4): how well each sole point's joint is seen (optional). When
    feet are seen in at least ``min_seen_frames`` frames, only those frames
    are candidates and each counts by its weight; otherwise (feet out of
    frame all along) the held legs stand for the person's standing direction
    and every frame counts.
    prior_spread_m: strength of the pull towards ``prior_up`` (camera -y);
    equivalent to a spread of the contacts of this many metres in every
    direction. Returns a :class:`Floor`.
    """
    soles = np.asarray(soles, np.float64)
    n = soles.shape[0]
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    pts = soles[valid]
    if len(pts) == 0:
        raise ValueError("no valid frame to estimate the floor from")
    pw = np.ones(pts.shape[:2]) if weights is None else np.asarray(weights, np.float64)[valid]
    if np.sum(pw.max(1) > 0.5) < min_seen_frames:
        pw = np.ones(pts.shape[:2])
    up = np.asarray(prior_up, np.float64)
    up = up / np.linalg.norm(up)
    # per-foot speed of the sole points, m/s (forward difference, valid rows)
    vel = np.zeros(pts.shape[:2])
    if len(pts) > 1:
        vel[1:] = np.linalg.norm(np.diff(pts, axis=0), axis=-1) * fps
        vel[0] = vel[1]
    offset = 0.0
    cand = None
    for _ in range(iterations):
        h = pts @ up  # (M, 4)
        feet = []
        cw = []
        for f in (0, 1):
            cols = np.flatnonzero(SOLE_FOOT == f)
            low = np.argmin(h[:, cols], axis=1)
            hf = h[np.arange(len(h)), cols[low]]
            vf = vel[np.arange(len(h)), cols[low]]
            wf = pw[np.arange(len(h)), cols[low]]
            seen = wf > 0.5
            if seen.sum() >= 3:
                sel = seen & (hf <= np.quantile(hf[seen], low_quantile)) \
                    & (vf <= np.median(vf[seen]))
            else:
                sel = np.zeros(len(hf), bool)
            feet.append(pts[np.arange(len(h)), cols[low]][sel])
            cw.append(wf[sel])
        cand = np.concatenate(feet, 0)
        cwt = np.concatenate(cw, 0)
        if len(cand) < 3:
            cand = pts.reshape(-1, 3)
            cwt = np.ones(len(cand))
        w = cwt.copy()
        for _ in range(3):
            nrm, offset = _fit_plane(cand, w, up, prior_spread_m)
            r = np.abs(cand @ nrm + offset)
            w = cwt * np.where(r <= huber_m, 1.0, huber_m / np.maximum(r, 1e-12))
        up = nrm
    dist = cand @ up + offset
    offset -= float(np.quantile(dist, rest_quantile))
    return Floor(normal=up, offset=offset, num_support=len(cand))


def transform_points(matrix, points):
    m = np.asarray(matrix, np.float64)
    return np.asarray(points, np.float64) @ m[:3, :3].T + m[:3, 3]


def world_to_camera(matrix):
    return rigid_inverse(np.asarray(matrix, np.float64))
