"""Shared test helpers: random poses and result files."""
import numpy as np

from hybrik_blender.core import rotations
from hybrik_blender.core.formats.result import Result


def random_motion(n, seed=0, spread=0.5):
    """Smoothly varying random SMPL poses (N, 24, 3, 3), upright in camera."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None, None]
    a, b = rng.normal(0, spread, (2, 1, 24, 3))
    aa = a + (b - a) * t + 0.1 * np.sin(7 * t + rng.normal(0, 1, (1, 24, 3)))
    rot = rotations.axis_angle_to_matrix(aa)
    upright = rotations.axis_angle_to_matrix(np.array([np.pi, 0.0, 0.0]))
    rot[:, 0] = upright @ rot[:, 0]
    return rot


def make_result(rotmats, betas=None, root=None, valid=None, fps=30.0, seed=0, **kw):
    n = len(rotmats)
    rng = np.random.default_rng(seed)
    if betas is None:
        betas = np.tile(rng.normal(0, 1, 10), (n, 1))
    if root is None:
        root = np.array([0.1, 0.3, 4.0]) + 0.05 * rng.normal(0, 1, (n, 3))
    if valid is None:
        valid = np.ones(n, bool)
    args = dict(frame_index=np.arange(n), time_s=np.arange(n) / fps, rotmats=rotmats,
                betas=betas, root_translation=root, joints29=np.zeros((n, 29, 3)),
                bbox=np.tile([10.0, 20.0, 300.0, 400.0], (n, 1)), confidence=np.ones(n),
                fps=fps, image_size=(640, 480), focal_length=(1000.0, 1000.0),
                principal_point=(320.0, 240.0), source="clip.mp4", backend="test",
                model="none")
    args.update(kw)
    return Result.from_frames(valid=valid, **args)


def hybrik_smpl_buffers(arrays):
    """SMPL arrays laid out as the smpl.* buffers of an official HybrIK
    checkpoint (torch tensors)."""
    import torch
    from hybrik_blender.core.body.skeleton import CHILDREN_29, PARENTS_29
    f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    nv = len(arrays["v_template"])
    h36m = arrays.get("J_regressor_h36m", np.full((17, nv), 1.0 / nv))
    return {
        "smpl.faces_tensor": torch.tensor(arrays["f"].astype(np.int64)),
        "smpl.v_template": f32(arrays["v_template"]),
        "smpl.shapedirs": f32(arrays["shapedirs"]),
        "smpl.posedirs": f32(arrays["posedirs"].reshape(nv * 3, -1).T),
        "smpl.J_regressor": f32(arrays["J_regressor"]),
        "smpl.J_regressor_h36m": f32(h36m),
        "smpl.children_map": torch.tensor(CHILDREN_29),
        "smpl.parents": torch.tensor(PARENTS_29),
        "smpl.lbs_weights": f32(arrays["weights"]),
    }


def write_random_checkpoint(path, arch="res34_cam", seed=1):
    """A HybrIK checkpoint with deterministic random weights (the golden
    recipe, from the key manifest) and the synthetic SMPL buffers."""
    import os

    import torch

    from hybrik_blender.worker.synthetic import synthetic_state
    from tests.conftest import DATA, synthetic_arrays
    manifest = os.path.join(DATA, f"checkpoint_keys_{arch}.json")
    state = {k: torch.from_numpy(v) for k, v in synthetic_state(manifest, arch, seed).items()}
    state.update(hybrik_smpl_buffers(synthetic_arrays(posedirs_scale=0)))
    torch.save({"model": state}, path)
    return str(path)


SMPLX_MODEL_FILE = "synthetic_smplx_neutral.npz"
SMPLX_KID_FILE = "synthetic_smplx_kid_template.npy"


def random_motion_x(n, seed=0, spread=0.5, finger_spread=0.5):
    """Smoothly varying random SMPL-X poses (N, 55, 3, 3), upright in camera:
    body, jaw, eyes and fingers all move."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None, None]
    scale = np.full((1, 55, 1), spread)
    scale[:, 25:] = finger_spread
    a, b = rng.normal(0, 1, (2, 1, 55, 3)) * scale
    aa = a + (b - a) * t + 0.1 * np.sin(7 * t + rng.normal(0, 1, (1, 55, 3)))
    rot = rotations.axis_angle_to_matrix(aa)
    upright = rotations.axis_angle_to_matrix(np.array([np.pi, 0.0, 0.0]))
    rot[:, 0] = upright @ rot[:, 0]
    return rot


def make_smplx_result(rot55, betas=None, expression=None, kid=None, seed=0, **kw):
    """An SMPL-X take (result format v2) from (N, 55, 3, 3) rotations: body
    rows 0-21 in ``rotmats`` (22-23 identity), jaw, eyes and fingers in their
    own fields."""
    rot55 = np.asarray(rot55)
    n = len(rot55)
    rng = np.random.default_rng(seed + 1000)
    body = np.tile(np.eye(3), (n, 24, 1, 1))
    body[:, :22] = rot55[:, :22]
    if expression is None:
        expression = rng.normal(0, 1, (n, 10))
    fields = dict(body_model="smplx", jaw_rotmat=rot55[:, 22], eye_rotmats=rot55[:, 23:25],
                  hand_rotmats=rot55[:, 25:55], expression=expression)
    if kid is not None:
        fields["kid"] = kid
    fields.update(kw)
    return make_result(body, betas=betas, seed=seed, **fields)


def cancel_after(batches):
    """(token, progress): a capture cancel token that is set once the capture
    has reported `batches` progress events."""
    from hybrik_blender.worker.capture import CancelToken
    token = CancelToken()
    seen = []

    def progress(event):
        if event["event"] == "progress" and event["stage"] == "capture":
            seen.append(event)
            if len(seen) >= batches:
                token.set()
    return token, progress
