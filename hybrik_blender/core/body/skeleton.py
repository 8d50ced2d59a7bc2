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
