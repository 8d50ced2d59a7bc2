"""Write examples/demo_take.npz: a procedural 3-second walk across the view of
a camera 4.5 m away, in the result-file format. It lets a fresh clone run the
main job with no video and no model download."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hybrik_blender.core.formats.result import Result, save_result  # noqa: E402
from hybrik_blender.core.rotations import axis_angle_to_matrix  # noqa: E402


def rx(a):
    return axis_angle_to_matrix(np.stack([a, 0 * a, 0 * a], -1))


def rz(a):
    return axis_angle_to_matrix(np.stack([0 * a, 0 * a, a], -1))


def demo_walk(n=90, fps=30.0, period_s=1.1):
    t = np.arange(n) / fps
    ph = 2 * np.pi * t / period_s
    rot = np.tile(np.eye(3), (n, 24, 1, 1))
    # SMPL: the leg hangs along -Y; a negative turn about X swings it forward (+Z).
    swing = np.radians(25) * np.sin(ph)
    rot[:, 1] = rx(-swing)
    rot[:, 2] = rx(swing)
    rot[:, 4] = rx(np.radians(30) * np.clip(np.sin(ph + 1.9), 0, None) + 0.05)
    rot[:, 5] = rx(np.radians(30) * np.clip(np.sin(ph + 1.9 + np.pi), 0, None) + 0.05)
    # arms lowered from the T-pose, swinging against the legs
    rot[:, 16] = rx(np.radians(18) * np.sin(ph)) @ rz(np.full(n, np.radians(-70)))
    rot[:, 17] = rx(-np.radians(18) * np.sin(ph)) @ rz(np.full(n, np.radians(70)))
    rot[:, 18] = rz(np.full(n, np.radians(-15)))
    rot[:, 19] = rz(np.full(n, np.radians(15)))
    # upright in the camera frame (y down), walking towards image right
    rot[:, 0] = axis_angle_to_matrix(np.array([np.pi, 0, 0])) @ axis_angle_to_matrix(
        np.array([0, np.pi / 2, 0]))
    root = np.stack([-1.2 + 0.8 * t, 0.1 - 0.015 * np.abs(np.sin(ph)), np.full(n, 4.5)], -1)
    return Result.from_frames(
        valid=np.ones(n, bool), frame_index=np.arange(n), time_s=t, rotmats=rot,
        betas=np.zeros((n, 10)), root_translation=root, joints29=np.zeros((n, 29, 3)),
        bbox=np.tile([200.0, 100.0, 440.0, 470.0], (n, 1)), confidence=np.ones(n), fps=fps,
        image_size=(640, 480), focal_length=(600.0, 600.0), principal_point=(320.0, 240.0),
        source="demo_walk", backend="procedural", model="none")


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "examples/demo_take.npz"
    save_result(out, demo_walk())
    print("wrote", out)
