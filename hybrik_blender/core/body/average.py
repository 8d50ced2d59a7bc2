"""A built-in average adult skeleton for when no SMPL body model is given.

The 29 rest joints (24 SMPL joints + 5 HybrIK leaves) in SMPL's frame (+Y up,
facing +Z, the subject's left at +X), pelvis at the origin, for a 1.70 m
adult in a T-pose. The numbers are this project's own: joint heights and
half-widths as fractions of stature, rounded from classic segment-length
ratios (thigh ~0.245 H, shank ~0.246 H, upper arm ~0.186 H, forearm ~0.146 H,
hand ~0.108 H, foot ~0.152 H, biacromial width ~0.23 H, hip-joint spacing
~0.10 H).
"""
import numpy as np

STATURE = 1.70

# joint: (x as a fraction of H, height above the floor as a fraction of H, z in metres)
_FRACTIONS = {
    0: (0.0, 0.565, 0.0),        # pelvis
    1: (0.050, 0.530, 0.0),      # left hip
    2: (-0.050, 0.530, 0.0),
    3: (0.0, 0.620, -0.01),      # spine1
    4: (0.056, 0.285, 0.01),     # left knee
    5: (-0.056, 0.285, 0.01),
    6: (0.0, 0.695, 0.0),        # spine2
    7: (0.053, 0.039, -0.02),    # left ankle
    8: (-0.053, 0.039, -0.02),
    9: (0.0, 0.735, 0.01),       # spine3
    10: (0.062, 0.008, 0.10),    # left foot (ball)
    11: (-0.062, 0.008, 0.10),
    12: (0.0, 0.850, -0.01),     # neck
    13: (0.045, 0.815, 0.0),     # left collar
    14: (-0.045, 0.815, 0.0),
    15: (0.0, 0.900, 0.02),      # head
    16: (0.108, 0.818, -0.01),   # left shoulder
    17: (-0.108, 0.818, -0.01),
    18: (0.294, 0.818, -0.02),   # left elbow
    19: (-0.294, 0.818, -0.02),
    20: (0.440, 0.818, -0.02),   # left wrist
    21: (-0.440, 0.818, -0.02),
    22: (0.490, 0.815, -0.02),   # left hand (knuckles)
    23: (-0.490, 0.815, -0.02),
    24: (0.0, 1.000, 0.0),       # head top
    25: (0.548, 0.812, -0.02),   # left middle fingertip
    26: (-0.548, 0.812, -0.02),
    27: (0.053, 0.004, 0.17),    # left big toe
    28: (-0.053, 0.004, 0.17),
}


def average_rest_joints_29(stature=STATURE):
    """(29, 3) rest joints in metres, pelvis at the origin."""
    j = np.array([_FRACTIONS[i] for i in range(29)], dtype=np.float64)
    out = np.stack([j[:, 0] * stature, j[:, 1] * stature, j[:, 2] * stature / STATURE], -1)
    return out - out[0]


def fitted_average_skeleton(joints29, valid=None):
    """The average skeleton scaled to the limb lengths seen in observed
    (N, 29, 3) joints: what an armature-only import uses when no body model
    is at hand."""
    bones = ((1, 4), (2, 5), (4, 7), (5, 8), (16, 18), (17, 19), (18, 20), (19, 21))
    j = np.asarray(joints29, np.float64)
    if valid is not None:
        j = j[np.asarray(valid, bool)]
    rest = average_rest_joints_29()
    p, c = np.array(bones).T
    seen = np.median(np.linalg.norm(j[:, c] - j[:, p], axis=-1), axis=0)
    ref = np.linalg.norm(rest[c] - rest[p], axis=-1)
    ratio = np.median(seen / ref) if len(j) and np.all(seen > 0) else 1.0
    return rest * float(ratio)


# --- SMPL-X: the 71 rest points of an armature-only SMPL-X rig ---------------
# Face points relative to the head joint (15), model frame, metres for a
# 1.70 m adult: jaw, left eye, right eye, lower lip, left pupil, right pupil.
_FACE = np.array([(0.0, 0.023, 0.015), (0.032, 0.087, 0.051), (-0.032, 0.087, 0.051),
                  (0.0, 0.027, 0.071), (0.032, 0.087, 0.063), (-0.032, 0.087, 0.063)])


def average_rest_points_x(rest29=None, hand_points=None):
    """(71, 3) SMPL-X rest joints and tail points (the layout of
    ``core.blender_space.rest_bones_x``) on the average skeleton.

    rest29: the SMPL-layout body to build on (default the average adult;
    pass :func:`fitted_average_skeleton`'s output to follow a take's limbs).
    hand_points: (20, 3) left-hand joints and tips relative to the left wrist
    (15 joints in SMPL-X order, then 5 tips: the rest-hand layout of
    :mod:`.hand`); default the average hand of
    :func:`.hand.average_hand_rest` at the body's stature. The right hand is
    its mirror image (x -> -x)."""
    from .hand import average_hand_rest
    ref = average_rest_joints_29()
    j = ref if rest29 is None else np.asarray(rest29, np.float64)
    scale = np.linalg.norm(j[24] - j[0]) / np.linalg.norm(ref[24] - ref[0])
    hand = (average_hand_rest("left", STATURE * scale) if hand_points is None
            else np.asarray(hand_points, np.float64))
    if hand.shape != (20, 3):
        raise ValueError(f"hand points have shape {hand.shape}, expected (20, 3)")
    mirror = np.array([-1.0, 1.0, 1.0])
    face = _FACE * scale + j[15]
    out = np.empty((71, 3))
    out[:22] = j[:22]
    out[22:25] = face[:3]
    out[25:40] = j[20] + hand[:15]
    out[40:55] = j[21] + hand[:15] * mirror
    out[55] = j[24]
    out[56:58] = j[27:29]
    out[58:61] = face[3:]
    out[61:66] = j[20] + hand[15:]
    out[66:71] = j[21] + hand[15:] * mirror
    return out
