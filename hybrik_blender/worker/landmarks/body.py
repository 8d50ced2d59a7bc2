"""The embedded default backend: mediapipe world landmarks -> SMPL motion.

It needs no checkpoint and no SMPL file. Steps, all batched over frames:

1. The 33 world landmarks (metres, centred between the hips, axes aligned with
   the camera: x right, y down, z away) become 29 SMPL-style joint targets.
   Joints mediapipe does not see (spine, neck, collars, head, the ball of the
   foot) are the rest skeleton's own offsets carried by frames built from
   the trunk, shoulders, face and feet (see joint_targets); the fingertip
   leaf extends wrist->knuckles.
2. Bone lengths are measured: the median over the valid frames. With a body
   model, the 10 betas are fitted to them (Gauss-Newton on the linear joint
   regressor). Without one, the built-in average skeleton is scaled to the
   observed limb lengths (core.average_skeleton.fitted_average_skeleton).
3. The analytical IK (core.body.ik.exact_ik, numpy) solves the swings. Each bone's
   twist comes from a second landmark: the forearm from the hand (index vs
   pinky), the shin from heel->toe, the head from the nose, the trunk from the
   shoulder line. The thigh and the upper arm take the bending plane of the
   knee and the elbow, with the foot or hand direction as the fallback when
   the limb is straight. The twists are found as the signed angle between the
   model's and the observed reference directions about the bone. This is
   repeated a few times because a parent's twist moves its children's frames.
4. The root translation comes from the landmarks' image positions: a linear
   least-squares fit of the hip-centre position that best reprojects the
   world landmarks through the pinhole camera. The focal length comes from
   the caller (video metadata or --focal-length). Without one, a 65° field of
   view across the longer image side is assumed (a phone's main camera).
"""
import numpy as np

from ...core.body import model as bm
from ...core.body.average import average_rest_joints_29, fitted_average_skeleton
from ...core.body.ik import exact_ik
from ...core.body.kinematics import forward_kinematics
from ...core.body.skeleton import CHILDREN_29

DEFAULT_FOV_DEG = 65.0

# mediapipe Pose landmark indices
NOSE, L_EAR, R_EAR = 0, 7, 8
L_SH, R_SH, L_EL, R_EL, L_WR, R_WR = 11, 12, 13, 14, 15, 16
L_PINKY, R_PINKY, L_INDEX, R_INDEX = 17, 18, 19, 20
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANK, R_ANK = 23, 24, 25, 26, 27, 28
L_HEEL, R_HEEL, L_TOE, R_TOE = 29, 30, 31, 32

# bones whose lengths are measured (parent, child) in the 29-joint skeleton
MEASURED_BONES = ((1, 4), (2, 5), (4, 7), (5, 8), (16, 18), (17, 19), (18, 20), (19, 21),
                  (1, 2), (16, 17), (0, 12), (7, 27), (8, 28))


def default_focal_length(width, height, fov_deg=DEFAULT_FOV_DEG):
    return 0.5 * max(width, height) / np.tan(np.radians(fov_deg) / 2)


def _unit(v):
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-9)


def _frame(lateral, up):
    """(..., 3, 3) rotation whose columns are (lateral, up, front), matching
    SMPL's rest axes (+X left, +Y up, +Z front); `up` is kept exactly."""
    y = _unit(up)
    x = _unit(lateral - np.sum(lateral * y, -1, keepdims=True) * y)
    return np.stack([x, y, np.cross(x, y)], -1)


def _place(origin, frame_obs, frame_rest, offsets, scale):
    """origin + scale * frame_obs @ frame_rest^T @ offsets, for (k, 3) offsets."""
    rel = np.einsum("ij,kj->ki", frame_rest.T, offsets)  # offsets in the rest frame's axes
    return origin[..., None, :] + scale[..., None, None] * np.einsum("...ij,kj->...ki",
                                                                     frame_obs, rel)


def joint_targets(world, rest):
    """(N, 33, 3) world landmarks + (29, 3) rest joints -> (N, 29, 3) targets.

    Joints that mediapipe does not see (spine, neck, collars, head, the ball
    of the foot) are the rest skeleton's own offsets carried by a frame built
    from landmarks that it does see: trunk (hips + shoulder-hip axis),
    shoulders, face (ears + nose) and foot (heel -> toe). The rest pose is
    thus reproduced exactly, and a leaning or twisting torso is followed."""
    w = np.asarray(world, np.float64)
    rest = np.asarray(rest, np.float64)
    v = lambda i: w[..., i, :]  # noqa: E731
    out = np.zeros(w.shape[:-2] + (29, 3))

    hip_mid, sh_mid = 0.5 * (v(L_HIP) + v(R_HIP)), 0.5 * (v(L_SH) + v(R_SH))
    r_hip, r_sh = 0.5 * (rest[1] + rest[2]), 0.5 * (rest[16] + rest[17])
    scale = np.linalg.norm(sh_mid - hip_mid, axis=-1) / np.linalg.norm(r_sh - r_hip)
    up, r_up = sh_mid - hip_mid, r_sh - r_hip
    lower = _frame(v(L_HIP) - v(R_HIP), up)
    upper = _frame(v(L_SH) - v(R_SH), up)
    r_lower = _frame(rest[1] - rest[2], r_up)
    r_upper = _frame(rest[16] - rest[17], r_up)
    low, high = [0, 3, 6, 9], [12, 13, 14, 15]
    out[..., low, :] = _place(hip_mid, lower, r_lower, rest[low] - r_hip, scale)
    out[..., high, :] = _place(sh_mid, upper, r_upper, rest[high] - r_sh, scale)

    ears = 0.5 * (v(L_EAR) + v(R_EAR))
    face = _frame(v(L_EAR) - v(R_EAR), np.cross(v(NOSE) - ears, v(L_EAR) - v(R_EAR)))
    out[..., 24, :] = _place(out[..., 15, :], face, np.eye(3), rest[24:25] - rest[15],
                             scale)[..., 0, :]

    pairs = ((1, L_HIP), (2, R_HIP), (4, L_KNEE), (5, R_KNEE), (7, L_ANK), (8, R_ANK),
             (16, L_SH), (17, R_SH), (18, L_EL), (19, R_EL), (20, L_WR), (21, R_WR))
    for joint, lm in pairs:
        out[..., joint, :] = v(lm)
    for ank, knee_lm, ank_lm, heel_lm, toe_lm in ((7, L_KNEE, L_ANK, L_HEEL, L_TOE),
                                                  (8, R_KNEE, R_ANK, R_HEEL, R_TOE)):
        foot, toe = ank + 3, ank + 20
        # foot frame: front = heel -> toe, up = from the heel towards the ankle
        fwd = _unit(v(toe_lm) - v(heel_lm))
        lat = _unit(np.cross(v(ank_lm) - v(heel_lm), fwd))
        foot_frame = np.stack([lat, np.cross(fwd, lat), fwd], -1)
        leg_scale = (np.linalg.norm(v(ank_lm) - v(knee_lm), axis=-1)
                     / np.linalg.norm(rest[ank] - rest[ank - 3]))
        placed = _place(out[..., ank, :], foot_frame, np.eye(3),
                        rest[[foot, toe]] - rest[ank], leg_scale)
        out[..., foot, :], out[..., toe, :] = placed[..., 0, :], placed[..., 1, :]
    for hand, tip, wrist, wr, idx, pinky in ((22, 25, 20, L_WR, L_INDEX, L_PINKY),
                                             (23, 26, 21, R_WR, R_INDEX, R_PINKY)):
        knuckles = 0.5 * (v(idx) + v(pinky))
        out[..., hand, :] = knuckles
        ratio = (np.linalg.norm(rest[tip] - rest[wrist])
                 / max(np.linalg.norm(rest[hand] - rest[wrist]), 1e-6))
        out[..., tip, :] = v(wr) + ratio * (knuckles - v(wr))
    return out


def measured_lengths(targets, valid):
    """Median length of each MEASURED_BONES bone over the valid frames."""
    t = targets[valid]
    p, c = np.array(MEASURED_BONES).T
    return np.median(np.linalg.norm(t[:, c] - t[:, p], axis=-1), axis=0)


def fit_betas(model, lengths, iterations=15, prior=0.02, limit=3.0):
    """Betas whose rest bone lengths match `lengths` (Gauss-Newton with a
    small prior pulling towards the mean shape)."""
    p, c = np.array(MEASURED_BONES).T
    jt = np.concatenate([model.joint_template, model.v_template[list(bm.LEAF_VERTEX_IDS)]])
    js = np.concatenate([model.joint_shapedirs, model.shapedirs[list(bm.LEAF_VERTEX_IDS)]])
    beta = np.zeros(model.num_betas)
    for _ in range(iterations):
        j = jt + js @ beta
        v = j[c] - j[p]
        length = np.linalg.norm(v, axis=-1)
        resid = length - lengths
        jac = np.einsum("bc,bck->bk", v / length[:, None], js[c] - js[p])
        a = jac.T @ jac + prior * np.eye(len(beta))
        beta = np.clip(beta - np.linalg.solve(a, jac.T @ resid + prior * beta), -limit, limit)
    return beta


def _signed_angle(axis, a, b):
    """Angle turning a onto b about axis (vectors projected on its plane)."""
    a = a - np.sum(a * axis, -1, keepdims=True) * axis
    b = b - np.sum(b * axis, -1, keepdims=True) * axis
    return np.arctan2(np.sum(axis * np.cross(a, b), -1), np.sum(a * b, -1))


def _weighted_angle(angles_weights):
    s = sum(w * np.sin(a) for a, w in angles_weights)
    c = sum(w * np.cos(a) for a, w in angles_weights)
    return np.arctan2(s, c)


def _angle(a, b):
    return np.arccos(np.clip(np.sum(_unit(a) * _unit(b), -1), -1.0, 1.0))


def _hinge_weight(a, b, rest_a, rest_b, full_deg=25.0):
    """How far a limb bends beyond its rest angle: 0 for the rest (nearly
    straight) limb, 1 from full_deg on. SMPL's rest knees and elbows are not
    perfectly straight, so the raw bending plane of a straight limb is noise."""
    bend = _angle(a, b) - _angle(rest_a, rest_b)
    return np.clip(bend / np.radians(full_deg), 0.0, 1.0)


# (joint, child) and the rest-frame reference direction whose observed
# counterpart fixes the twist. SMPL rest frame: +X left, +Y up, +Z front.
_X, _Y, _Z = np.eye(3)


def observed_references(w, rest):
    """Observed reference directions per twisted joint, with weights."""
    def v(i):
        return w[..., i, :]
    refs = {}
    for hip, knee, ank, heel, toe in ((1, L_KNEE, L_ANK, L_HEEL, L_TOE),
                                      (2, R_KNEE, R_ANK, R_HEEL, R_TOE)):
        hip_lm = L_HIP if hip == 1 else R_HIP
        thigh, shin = v(knee) - v(hip_lm), v(ank) - v(knee)
        hw = _hinge_weight(thigh, shin, rest[hip + 3] - rest[hip], rest[hip + 6] - rest[hip + 3])
        refs[hip] = [(_X, np.cross(thigh, shin), hw), (_Z, v(toe) - v(heel), 1 - hw)]
        refs[hip + 3] = [(_Z, v(toe) - v(heel), np.ones_like(hw))]
    for sh, el, wr, idx, pinky, hinge in ((16, L_EL, L_WR, L_INDEX, L_PINKY, -_Y),
                                          (17, R_EL, R_WR, R_INDEX, R_PINKY, _Y)):
        sh_lm = L_SH if sh == 16 else R_SH
        upper, fore = v(el) - v(sh_lm), v(wr) - v(el)
        hw = _hinge_weight(upper, fore, rest[sh + 2] - rest[sh], rest[sh + 4] - rest[sh + 2])
        thumb_side = v(idx) - v(pinky)
        refs[sh] = [(hinge, np.cross(upper, fore), hw), (_Z, thumb_side, 1 - hw)]
        refs[sh + 2] = [(_Z, thumb_side, np.ones_like(hw))]
    ears = 0.5 * (v(L_EAR) + v(R_EAR))
    refs[15] = [(_Z, v(NOSE) - ears, np.ones(w.shape[:-2]))]
    refs[9] = [(_X, v(L_SH) - v(R_SH), np.ones(w.shape[:-2]))]
    return refs


def solve_rotations(targets, rest, world, passes=3):
    """IK with landmark-derived twists. targets (N,29,3), rest (N|1,29,3)."""
    n = len(targets)
    rest = np.broadcast_to(np.asarray(rest, np.float64), (n, 29, 3))
    angles = np.zeros((n, 23))
    refs = observed_references(np.asarray(world, np.float64), rest[0])
    for _ in range(passes):
        phis = np.stack([np.cos(angles), np.sin(angles)], -1)
        glob, _ = forward_kinematics(exact_ik(targets, rest, phis), rest[:, :24])
        for joint, items in refs.items():
            bone = rest[:, CHILDREN_29[joint]] - rest[:, joint]
            axis = _unit(np.einsum("nij,nj->ni", glob[:, joint], bone))
            estimates = []
            for ref_rest, observed, weight in items:
                model_dir = np.einsum("nij,j->ni", glob[:, joint], ref_rest)
                estimates.append((_signed_angle(axis, model_dir, observed), weight))
            delta = _weighted_angle(estimates)
            if joint == 9:  # spread the trunk twist over the three spine joints
                for s in (3, 6, 9):
                    angles[:, s - 1] += delta / 3
            else:
                angles[:, joint - 1] += delta
    return exact_ik(targets, rest, np.stack([np.cos(angles), np.sin(angles)], -1))


def root_positions(world, image_xy, visibility, focal, principal):
    """(N, 3) camera position of the landmarks' origin (the hip centre)."""
    fx, fy = focal
    cx, cy = principal
    w = np.asarray(world, np.float64)
    wt = np.clip(np.asarray(visibility, np.float64), 0, 1) ** 2 + 1e-6
    du = image_xy[..., 0] - cx
    dv = image_xy[..., 1] - cy
    zero = np.zeros_like(du)
    # rows: fx*Tx - du*Tz = du*Z - fx*X  and  fy*Ty - dv*Tz = dv*Z - fy*Y
    a = np.concatenate([np.stack([np.full_like(du, fx), zero, -du], -1),
                        np.stack([zero, np.full_like(dv, fy), -dv], -1)], -2)
    b = np.concatenate([du * w[..., 2] - fx * w[..., 0], dv * w[..., 2] - fy * w[..., 1]], -1)
    ww = np.concatenate([wt, wt], -1)
    ata = np.einsum("nki,nk,nkj->nij", a, ww, a)
    atb = np.einsum("nki,nk,nk->ni", a, ww, b)
    return np.linalg.solve(ata + 1e-9 * np.eye(3), atb)


def solve_clip(world, image_xy, visibility, valid, focal, principal, body_model=None):
    """Everything for the valid frames of a clip.

    Returns dict with rotmats (N,24,3,3), betas (N,10), root_translation (N,3),
    joints29 (N,29,3) in camera coordinates, rest29 (29,3); rows of invalid
    frames are identity / zero.
    """
    n = len(world)
    valid = np.asarray(valid, bool)
    out = {"rotmats": np.tile(np.eye(3), (n, 24, 1, 1)), "betas": np.zeros((n, 10)),
           "root_translation": np.zeros((n, 3)), "joints29": np.zeros((n, 29, 3))}
    if not valid.any():
        out["rest29"] = average_rest_joints_29()
        return out
    first_rest = (bm.rest_joints_29(body_model, np.zeros(10)) if body_model is not None
                  else average_rest_joints_29())
    targets = joint_targets(world[valid], first_rest)
    lengths = measured_lengths(targets, np.ones(len(targets), bool))
    if body_model is not None:
        betas = fit_betas(body_model, lengths)
        rest = bm.rest_joints_29(body_model, betas)
        out["betas"][valid] = betas
    else:
        # the same fit an armature-only import makes from the result's joints
        rest = fitted_average_skeleton(targets)
    targets = joint_targets(world[valid], rest)
    rot = solve_rotations(targets, rest[None], world[valid])
    origin = root_positions(world[valid], image_xy[valid], visibility[valid], focal, principal)
    pelvis = origin + targets[:, 0]
    out["rotmats"][valid] = rot
    out["root_translation"][valid] = pelvis
    out["joints29"][valid] = targets + origin[:, None]
    out["rest29"] = rest
    return out


# --- evidence for the 2D fit and per-joint confidence -----------------------------

# 29-joint slot -> the landmarks whose image points are that joint (mean of several)
EVIDENCE_LANDMARKS = {1: (L_HIP,), 2: (R_HIP,), 4: (L_KNEE,), 5: (R_KNEE,), 7: (L_ANK,),
                      8: (R_ANK,), 16: (L_SH,), 17: (R_SH,), 18: (L_EL,), 19: (R_EL,),
                      20: (L_WR,), 21: (R_WR,), 22: (L_INDEX, L_PINKY), 23: (R_INDEX, R_PINKY)}

# joint -> groups of landmarks that fix its rotation; the confidence is the
# best group's least visible landmark (the trunk is fixed by the hips or by
# the shoulders)
_TRUNK = ((L_HIP, R_HIP, L_SH, R_SH),)
ROTATION_LANDMARKS = {
    0: ((L_HIP, R_HIP), (L_SH, R_SH)), 3: _TRUNK, 6: _TRUNK, 9: _TRUNK,
    1: ((L_HIP, L_KNEE),), 2: ((R_HIP, R_KNEE),), 4: ((L_KNEE, L_ANK),), 5: ((R_KNEE, R_ANK),),
    7: ((L_ANK, L_HEEL, L_TOE),), 8: ((R_ANK, R_HEEL, R_TOE),), 10: ((L_HEEL, L_TOE),),
    11: ((R_HEEL, R_TOE),), 12: ((NOSE, L_EAR, R_EAR),), 15: ((NOSE, L_EAR, R_EAR),),
    13: ((L_SH, R_SH),), 14: ((L_SH, R_SH),), 16: ((L_SH, L_EL),), 17: ((R_SH, R_EL),),
    18: ((L_EL, L_WR),), 19: ((R_EL, R_WR),), 20: ((L_WR, L_INDEX, L_PINKY),),
    21: ((R_WR, R_INDEX, R_PINKY),), 22: ((L_WR, L_INDEX, L_PINKY),),
    23: ((R_WR, R_INDEX, R_PINKY),),
}


def image_evidence(image_xy, visibility):
    """(N, 29, 2) image points and (N, 29) confidences (landmark visibility;
    0 for joints without a landmark) in the 29-joint order."""
    xy = np.asarray(image_xy, np.float64)
    vis = np.clip(np.asarray(visibility, np.float64), 0, 1)
    uv = np.zeros(xy.shape[:-2] + (29, 2))
    conf = np.zeros(xy.shape[:-2] + (29,))
    for joint, lms in EVIDENCE_LANDMARKS.items():
        uv[..., joint, :] = xy[..., list(lms), :].mean(-2)
        conf[..., joint] = vis[..., list(lms)].min(-1)
    return uv, conf


def joint_confidence(visibility):
    """(N, 24) how well each joint's rotation is seen (ROTATION_LANDMARKS)."""
    vis = np.clip(np.asarray(visibility, np.float64), 0, 1)
    out = np.zeros(vis.shape[:-1] + (24,))
    for joint, groups in ROTATION_LANDMARKS.items():
        out[..., joint] = np.max([vis[..., list(g)].min(-1) for g in groups], 0)
    return out
