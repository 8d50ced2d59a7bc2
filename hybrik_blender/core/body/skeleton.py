"""The SMPL kinematic tree and the five extra HybrIK leaf joints."""
import numpy as np

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee",
    "spine2", "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot",
    "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)
NUM_JOINTS = 24

# Parent of each of the 24 SMPL joints; -1 marks the root.
PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9,
                    12, 13, 14, 16, 17, 18, 19, 20, 21], dtype=np.int64)

# HybrIK reads five template vertices as extra joints 24..28.
LEAF_NAMES = ("head_top", "left_middle_tip", "right_middle_tip",
              "left_big_toe", "right_big_toe")
LEAF_VERTEX_IDS = np.array([411, 2445, 5905, 3216, 6617], dtype=np.int64)
LEAF_PARENTS = np.array([15, 22, 23, 10, 11], dtype=np.int64)

PARENTS_29 = np.concatenate([PARENTS, LEAF_PARENTS])

# The child each joint aims at in HybrIK's IK (and the tail of its bone in
# Blender). spine3 has three children; HybrIK aims it at the neck. -1: leaf.
CHILDREN_29 = np.array([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 27, 28, 15, 16, 17, 24,
                        18, 19, 20, 21, 22, 23, 25, 26, -1, -1, -1, -1, -1],
                       dtype=np.int64)

NUM_BETAS = 10
NUM_POSE_CORRECTIVES = 9 * (NUM_JOINTS - 1)  # 207
SMPL_NUM_VERTICES = 6890

# Left/right joint pairs (24-joint indices), for mirroring.
FLIP_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19),
              (20, 21), (22, 23))

# --- SMPL-X ----------------------------------------------------------------
# The 55 SMPL-X joints: the 22 body joints of SMPL (0-21, same meaning), jaw,
# eyes, then 15 finger joints per hand. Bone and shape-key names of the SMPL-X
# character follow these names (eyes without smplx's "_smplhf" suffix).
FINGERS = ("index", "middle", "pinky", "ring", "thumb")
HAND_JOINT_NAMES = tuple(f"{side}_{finger}{k}" for side in ("left", "right")
                         for finger in FINGERS for k in (1, 2, 3))
SMPLX_JOINT_NAMES = JOINT_NAMES[:22] + ("jaw", "left_eye", "right_eye") + HAND_JOINT_NAMES
SMPLX_NUM_JOINTS = 55
SMPLX_PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17,
                          18, 19, 15, 15, 15,
                          20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
                          21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53],
                         dtype=np.int64)
SMPLX_JAW, SMPLX_LEFT_EYE, SMPLX_RIGHT_EYE = 22, 23, 24
SMPLX_HAND_SLICE = slice(25, 55)  # rows of the result's hand_rotmats, in order
SMPLX_NUM_VERTICES = 10475
SMPLX_NUM_POSE_CORRECTIVES = 9 * (SMPLX_NUM_JOINTS - 1)  # 486
NUM_EXPRESSION = 10
