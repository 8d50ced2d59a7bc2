"""Precision measurements shared by tests/test_precision.py and
scripts/bench_precision.py: the golden-recipe networks (deterministic seed-1
weights, synthetic body models) on crops of real photos, run in fp32 and
bf16, and the deviation between the two in uvd, the camera-space joints,
the rotations and the vertices."""
import json
import os

import cv2
import numpy as np
import torch

from tests.conftest import DATA

SMPL_ARCHS = ("res34_cam", "hrnet48_cam")
X_ARCHS = ("hrnetx48_rle", "hrnetx48")
_X_FILES = {"hrnetx48_rle": "hrnet48_rle", "hrnetx48": "hrnet48"}
# the real photos with hand-made person boxes (tests/data/person_boxes.json)
PHOTOS = ("astronaut.png", "basketball1.png")
MORE_PHOTOS = ("basketball2.png",)   # in .tools/media after scripts/fetch_test_media.sh


def photo_crops(photos=PHOTOS):
    """Normalised crops (B, 3, 256, 256), square boxes (B, 4), principal
    points (B, 2) and names of every person in ``photos`` (missing files
    are left out)."""
    from hybrik_blender.worker.hybrik import preprocess
    with open(os.path.join(DATA, "person_boxes.json"), encoding="utf-8") as fh:
        boxes = json.load(fh)["images"]
    crops, squares, centres, names = [], [], [], []
    for name in photos:
        path = os.path.join(DATA, name)
        if not os.path.exists(path):
            path = os.path.join(os.path.dirname(os.path.dirname(DATA)), ".tools", "media", name)
        if not os.path.exists(path):
            continue
        img = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        for i, box in enumerate(boxes[name]):
            crop, square, _ = preprocess.crop_person(img, box)
            crops.append(crop)
            squares.append(np.asarray(square, np.float64))
            centres.append([img.shape[1] / 2.0, img.shape[0] / 2.0])
            names.append(f"{name}#{i}")
    return (preprocess.normalize_crops(np.stack(crops)), np.stack(squares), np.array(centres),
            names)


_BODIES = {}


def body_for(arch):
    if arch not in _BODIES:
        if arch in X_ARCHS:
            from hybrik_blender.worker.hybrik import smplx_layer
            _BODIES[arch] = smplx_layer.load_smplx_model(
                os.path.join(DATA, "synthetic_smplx_neutral.npz"),
                os.path.join(DATA, "synthetic_smplx_kid_template.npy"))
        else:
            from tests.test_hybrik_golden import golden_body_model
            _BODIES[arch] = golden_body_model()
    return _BODIES[arch]


def golden_state(arch):
    from hybrik_blender.worker.synthetic import synthetic_state
    if arch in X_ARCHS:
        return synthetic_state(os.path.join(DATA, f"checkpoint_keys_hybrikx_{_X_FILES[arch]}.json"),
                               arch, seed=1, rest_points71=body_for(arch).rest_points())
    return synthetic_state(os.path.join(DATA, f"checkpoint_keys_{arch}.json"), arch, seed=1)


def golden_pipeline(arch, precision="fp32", state=None, **kw):
    """The golden-recipe network of ``arch`` in a pipeline of ``precision``."""
    state = golden_state(arch) if state is None else state
    if arch in X_ARCHS:
        from hybrik_blender.worker.hybrik.modelx import build_pipeline_x
        return build_pipeline_x(arch, state, body_for(arch), precision=precision, **kw)
    from hybrik_blender.worker.hybrik.model import build_pipeline
    return build_pipeline(arch, state, body_for(arch), precision=precision, **kw)


def compared(pipe, x, boxes, centres):
    """One call's outputs in the form speed.deviation compares: camera-space
    joints (the 29, or HybrIK-X's 71 points), rotations, vertices (root-
    relative mesh, camera axes) and uvd."""
    out = pipe(x, boxes, centres, vertices=True)
    if "pred_theta_mat" in out:   # HybrIK-X
        from hybrik_blender.worker.hybrik.modelx import DEPTH_FACTOR
        return {"joints": out["pred_xyz_hybrik"] * DEPTH_FACTOR + out["cam_root"][:, None],
                "rotations": out["pred_theta_mat"], "vertices": out["pred_vertices"],
                "uvd": out["pred_uvd_jts"]}
    return {"joints": out["joints29_cam"], "rotations": out["rot_mats"],
            "vertices": out["vertices"], "uvd": out["uvd"]}


def input_noise(x, lsb, seed=3):
    """x plus Gaussian noise of ``lsb`` grey levels (std) of the uint8 image."""
    from hybrik_blender.worker.hybrik.preprocess import STD
    g = torch.Generator().manual_seed(seed)
    std = torch.tensor(STD).reshape(1, 3, 1, 1) * 255.0
    return x + torch.randn(x.shape, generator=g) * lsb / std
