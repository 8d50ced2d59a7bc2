"""Parity with the official HybrIK code: max |ours - official| of the local
rotation matrices and the vertices (metres) on the golden reference data
(tests/data), in float32 and float64, for ResNet-34, HRNet-W48 and both
HybrIK-X networks, and for the IK cases in isolation.

    PYTHONPATH=$PWD .venv/bin/python scripts/measure_parity.py [--slow]

float64 rows: the whole SMPL pipeline in float64 against the official float64
run (", f32 model": with the body model rounded to float32, as the official
layer held it in that run too); for HybrIK-X the refinement, IK and skinning in float64 on the official
float64 network heads (``--slow`` also runs the HybrIK-X float64 network,
minutes on two cores). These are the README's parity figures."""
import argparse
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.conftest import DATA  # noqa: E402
from tests import test_hybrik_golden as hg  # noqa: E402
from tests.test_ik_golden import float32_model  # noqa: E402
from hybrik_blender.worker.hybrik import ik, ikx, modelx, smplx_layer  # noqa: E402
from hybrik_blender.worker.hybrik.model import build_pipeline  # noqa: E402
from hybrik_blender.worker.synthetic import synthetic_state  # noqa: E402


def err(a, b):
    a = a.double().cpu().numpy() if torch.is_tensor(a) else np.asarray(a, np.float64)
    return float(np.abs(a.reshape(np.shape(b)) - b).max())


def orth(r):
    r = r.double().cpu().numpy() if torch.is_tensor(r) else np.asarray(r, np.float64)
    return float(np.abs(r @ np.swapaxes(r, -1, -2) - np.eye(3)).max())


def row(name, rot, verts, ortho=None, raw=None, uvd=None):
    extra = "" if raw is None else f"   (official matrices {raw:.1e})"
    extra += "" if ortho is None else f"   |RR^T-I| of the reference {ortho:.1e}"
    extra += "" if uvd is None else f"   uvd {uvd:.1e}"
    print(f"{name:28s} rotations {rot:.1e}   vertices {verts:.1e} m{extra}")


def raw_err(o, ref):
    return err(o["rot_mats_official"][0], ref) if "rot_mats_official" in o else None


def smpl(arch, body, swing):
    g = hg.golden(arch)
    state = synthetic_state(os.path.join(DATA, f"checkpoint_keys_{arch}.json"), arch, seed=1)
    pipe = build_pipeline(arch, state, body, swing=swing)
    args = (g["bbox_xyxy_input"][None], g["img_center"][None])
    o = pipe(torch.from_numpy(g["input_tensor"]), *args, vertices=True)
    row(f"{arch} float32", err(o["rot_mats"][0], g["pred_theta_mats"]),
        err(o["vertices"][0], g["pred_vertices"]), orth(g["pred_theta_mats"]),
        raw_err(o, g["pred_theta_mats"]), err(o["uvd"][0], g["pred_uvd_jts"]))
    # a fresh pipeline: the float32 call above prepared (folded) its network
    pipe = build_pipeline(arch, state, body, swing=swing)
    pipe.net.double()
    x = torch.from_numpy(g["input_tensor"]).double()
    # the official float64 layer holds the body model rounded to float32
    for name, bm in (("", body), (", f32 model", float32_model(body))):
        pipe.body = ik.TorchBodyModel(bm, torch.float64)
        o = pipe(x, *args, vertices=True)
        row(f"{arch} float64{name}", err(o["rot_mats"][0], g["f64_pred_theta_mats"]),
            err(o["vertices"][0], g["f64_pred_vertices"]), orth(g["f64_pred_theta_mats"]),
            raw_err(o, g["f64_pred_theta_mats"]), err(o["uvd"][0], g["f64_pred_uvd_jts"]))


def ik_cases(body, swing):
    with np.load(os.path.join(DATA, "ik_cases.npz"), allow_pickle=False) as d:
        c = {k: d[k] for k in d.files}
    for dtype, sfx in ((torch.float32, ""), (torch.float64, "_f64")):
        tb = ik.TorchBodyModel(body, dtype)
        betas = torch.tensor(c["betas"], dtype=dtype)
        out = ik.solve(tb, torch.tensor(c["pose_skeleton"], dtype=dtype), betas,
                       torch.tensor(c["phis"], dtype=dtype), vertices=True, swing=swing)
        v = err(out["vertices"][:4], c["ik_vertices_first4"]) if not sfx else float("nan")
        row(f"ik_cases {'float64' if sfx else 'float32'}",
            err(out["rot_mats"], c["ik_rot_mats" + sfx]), v, orth(c["ik_rot_mats" + sfx]),
            err(out["rot_mats_official"], c["ik_rot_mats" + sfx])
            if "rot_mats_official" in out else None)


def hybrikx(slow):
    from tests import test_hybrikx_golden as xg
    model = smplx_layer.load_smplx_model(os.path.join(DATA, "synthetic_smplx_neutral.npz"),
                                         os.path.join(DATA, "synthetic_smplx_kid_template.npy"))
    for arch in xg.ARCHS:
        g, pipe, o, _ = xg.run(arch, model)
        row(f"{arch} float32", err(o["pred_theta_mat"][0], g["pred_theta_mat"]),
            err(o["pred_vertices"][0], g["pred_vertices"]), orth(g["pred_theta_mat"]))
        o = xg.solve_float64(g, pipe)
        row(f"{arch} float64 (solve)", err(o["pred_theta_mat"][0], g["f64_pred_theta_mat"]),
            err(o["pred_vertices"][0], g["f64_pred_vertices"]))
        if slow:
            p = xg.pipeline(arch, model)
            p.net.double()
            p.body = p.body.to(dtype=torch.float64)
            o = p(torch.from_numpy(g["input_tensor"]).double(), g["bbox_xyxy_input"][None],
                  g["img_center"][None], vertices=True)
            row(f"{arch} float64 (network)", err(o["pred_theta_mat"][0], g["f64_pred_theta_mat"]),
                err(o["pred_vertices"][0], g["f64_pred_vertices"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slow", action="store_true", help="also the HybrIK-X float64 network")
    ap.add_argument("--swing", default="official", choices=("official", "exact"))
    ap.add_argument("--no-x", action="store_true", help="skip HybrIK-X")
    a = ap.parse_args()
    torch.set_num_threads(2)     # as the reference runs
    body = hg.golden_body_model()
    for arch in hg.ARCHS:
        smpl(arch, body, a.swing)
    ik_cases(body, a.swing)
    if not a.no_x:
        hybrikx(a.slow)


if __name__ == "__main__":
    main()
