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
