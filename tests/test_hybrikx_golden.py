"""Parity of the HybrIK-X backend with the official implementation (HybrIK
9b8681d): both released networks, HRNetSMPLXCamKidReg (``hrnetx48_rle``) and
HRNetSMPLXCamKid (``hrnetx48``), with deterministic seed-1 weights on the
astronaut photo and the synthetic SMPL-X model (shared/golden_x, README §2-3).

tests/data/hybrikx_*_seed1.npz are the golden_x reference files without
``input_tensor`` (bit-identical to the SMPL set's, which
tests/data/hybrik_hrnet48_cam_seed1.npz holds) and ``flip_pred_vertices``.

The tolerances are the README's suggested ones. The full float64 network run
takes minutes on two cores: set HYBRIK_SLOW_TESTS=1 to include it; the
float64 check of everything after the network always runs.
"""
import os

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import DATA
from hybrik_blender.worker.hybrik import modelx, preprocess, smplx_layer
from hybrik_blender.worker.synthetic import rle_prior_biases, synthetic_state

ARCHS = {"hrnetx48_rle": "hrnet48_rle", "hrnetx48": "hrnet48"}
# README "suggested tolerances for a float32 re-implementation", tightened to
# what the CPU runs reach with margin, except the heatmap model's rotations.
# Those are float32 network noise amplified by the IK, and they depend on
# which kernels oneDNN picks for the CPU: against the official float32 run,
# 7.6e-4 with AVX-512 and 2.0e-3 with AVX2 (ONEDNN_MAX_CPU_ISA=AVX2 or an
# AVX2-only CPU), while the official float32 run itself is 1.0e-3 away from
# its float64 run. So they are held to the README's 5e-3 against the float32
# reference, and to the float64 reference by F64_FACTOR times the official
# float32 run's own error (measured: 2.6e-4 AVX-512, 9.5e-4 AVX2, bound
# 3.1e-3; the regression model: 5.6e-6 / 1.3e-5, bound 2.6e-5). The float64
# solve matches to 2e-13. The CUDA test keeps the README's bounds.
TOL = {
    "hrnetx48_rle": dict(feat=1e-3, uvd=1e-4, other=1e-4, cam=1e-4, theta=1e-4, verts=1e-4,
                         theta_cuda=1e-3),
    "hrnetx48": dict(feat=1e-3, uvd=2e-4, other=1e-4, cam=5e-4, theta=5e-3, verts=1e-4,
                     theta_cuda=5e-3),
}
F64_FACTOR = 3.0
_RUNS = {}


@pytest.fixture(scope="module")
def model():
    return smplx_layer.load_smplx_model(os.path.join(DATA, "synthetic_smplx_neutral.npz"),
                                        os.path.join(DATA, "synthetic_smplx_kid_template.npy"))


def golden(arch):
    with np.load(os.path.join(DATA, f"hybrikx_{ARCHS[arch]}_seed1.npz"),
                 allow_pickle=False) as d:
        g = {k: d[k] for k in d.files}
    with np.load(os.path.join(DATA, "hybrik_hrnet48_cam_seed1.npz"), allow_pickle=False) as d:
        g["input_tensor"] = d["input_tensor"]
    return g


def manifest(arch):
    return os.path.join(DATA, f"checkpoint_keys_hybrikx_{ARCHS[arch]}.json")


def pipeline(arch, model):
    state = synthetic_state(manifest(arch), arch, seed=1, rest_points71=model.rest_points())
    return modelx.build_pipeline_x(arch, state, model)


def run(arch, model):
    """One network call on [crop, mirrored crop] gives the plain and the
    flip-test outputs (cached per module)."""
    if arch not in _RUNS:
        torch.set_num_threads(2)   # as the reference run
        g = golden(arch)
        pipe = pipeline(arch, model)
        x = torch.from_numpy(g["input_tensor"])
        with torch.inference_mode():
            raw = pipe._net(torch.cat([x, x.flip(3)]))
        plain = {k: v[:1] for k, v in raw.items()}
        mirrored = {k: v[1:] for k, v in raw.items()}
        box, centre = g["bbox_xyxy_input"][None], g["img_center"][None]
        out = pipe.solve(pipe._decode(plain), box, centre, vertices=True, trace=True)
        flip = pipe.solve(pipe._decode(plain, mirrored), box, centre)
        _RUNS[arch] = (g, pipe, out, flip)
    return _RUNS[arch]


def _np(v):
    if isinstance(v, (tuple, list)):
        return type(v)(_np(t) for t in v)
    return v[0].double().numpy() if torch.is_tensor(v) else v


def _close(a, b, tol, rel=False, what=""):
    a = np.asarray(_np(a), np.float64).reshape(np.shape(b))
    err = np.abs(a - b).max()
    if rel:
        err = err / max(1.0, np.abs(b).max())
    assert err <= tol, f"{what}: max error {err:.3g} > {tol}"
    return err


def test_synthetic_weights_cover_the_manifests(model):
    import json
    for arch in ARCHS:
        with open(manifest(arch)) as fh:
            keys = json.load(fh)
        state = synthetic_state(keys, arch, seed=1, rest_points71=model.rest_points())
        assert set(state) == {k for k in keys if not k.startswith("smplx_layer.")}
        for k, v in state.items():
            assert list(v.shape) == keys[k]["shape"] and str(v.dtype) == keys[k]["dtype"], k
        net_keys = set(modelx.netsx.build_network_x(arch).state_dict())
        assert net_keys == set(state)
    g = golden("hrnetx48_rle")
    coord, mouth = rle_prior_biases(model.rest_points())
    assert np.abs(coord - g["recipe_fc_coord_bias"]).max() < 1e-12
    assert np.abs(mouth - g["recipe_fc_coord_mouthtop_bias"]).max() < 1e-12


def test_gain_rules_are_the_recipe():
    import json
    from hybrik_blender.worker.synthetic import DEFAULT_GAIN, GAIN_RULES
    for arch in ARCHS:
        g = golden(arch)
        assert [list(r) for r in GAIN_RULES[arch]] == json.loads(str(g["gain_rules"]))
        assert DEFAULT_GAIN[arch] == float(g["default_gain"])


def test_preprocessing_matches():
    g = golden("hrnetx48_rle")
    img = cv2.cvtColor(cv2.imread(os.path.join(DATA, "astronaut.png")), cv2.COLOR_BGR2RGB)
    crop, box, affine = preprocess.crop_person(img, g["bbox_xyxy"])
    np.testing.assert_array_equal(box, g["bbox_xyxy_input"])
    np.testing.assert_allclose(affine, g["affine_2x3"], atol=1e-12)
    assert np.abs(preprocess.normalize_crops(crop[None]).numpy() - g["input_tensor"]).max() <= 1e-6


@pytest.mark.parametrize("arch", ARCHS)
def test_network_outputs_match(arch, model):
    g, _, o, _ = run(arch, model)
    t = TOL[arch]
    _close(o["img_feat"], g["feat_pooled"], t["feat"], what="feat_pooled")
    _close(o["pred_uvd_jts"], g["pred_uvd_jts"], t["uvd"], what="uvd")
    _close(o["maxvals"], g["maxvals"], t["uvd"], what="maxvals")
    _close(o["pred_sigma"], g["pred_sigma"], t["other"], what="sigma")
    _close(o["pred_phi"], g["pred_phi"], t["other"], what="phi")
    _close(o["pred_shape_full"], g["pred_shape_full"], t["other"], what="shape")
    _close(o["pred_beta"], g["pred_beta"], t["other"], what="beta")
    _close(o["pred_expression"], g["pred_expression"], t["other"], what="expression")
    _close(o["pred_camera"], g["pred_camera"], t["other"], what="pred_camera")
    if arch == "hrnetx48_rle":
        _close(o["pred_lh_uvd"], g["pred_lh_uvd"], t["uvd"], what="lh")
        _close(o["pred_rh_uvd"], g["pred_rh_uvd"], t["uvd"], what="rh")
        # the finger rows are the wrist plus the raw offsets
        uvd = _np(o["pred_uvd_jts"])
        np.testing.assert_allclose(uvd[25:40], g["pred_lh_uvd"] + uvd[20], atol=1e-6)
        np.testing.assert_allclose(1 - _np(o["pred_sigma"]), g["scores"], atol=1e-6)
    else:
        for i, axis in enumerate("xyz"):
            _close(o["marginals"][i], g[f"heatmap_marginal_{axis}"], 1e-4, what=axis)


@pytest.mark.parametrize("arch", ARCHS)
def test_scale_refinement_matches(arch, model):
    g, _, o, _ = run(arch, model)
    t = TOL[arch]
    _close(o["update_scale_weight"], g["update_scale_weight"], t["other"], what="weights")
    assert len(o["trace"]) == 3
    for i, step in enumerate(o["trace"]):
        _close(step["init"], g["update_scale_init"][i:i + 1], t["cam"], rel=True, what="init")
        assert bool(step["ok"][0]) == bool(g["update_scale_ok"][i])
        _close(step["ik_input"], g["update_scale_ik_input_pose_skeleton"][i], t["other"],
               what="ik input")
        _close(step["ik_joints55"], g["update_scale_ik_output_joints55"][i], t["other"],
               what="ik joints")
        _close(step["ik_rot_mats"], g["update_scale_ik_output_rot_mats"][i], t["theta"],
               what="ik rot")
    _close(o["cam_scale"], g["cam_scale"], t["cam"], rel=True, what="cam_scale")
    assert abs(float(o["cam_scale"][0]) - float(g["update_scale_out"][-1])) < 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_camera_ik_and_mesh_match(arch, model):
    g, _, o, _ = run(arch, model)
    t = TOL[arch]
    _close(o["cam_root"], g["cam_root"], t["cam"], rel=True, what="cam_root")
    _close(o["transl"], g["transl"], t["cam"], rel=True, what="transl")
    _close(o["pred_xyz_hybrik"], g["pred_xyz_hybrik"], t["other"], what="xyz_hybrik")
    _close(o["pred_xyz_hybrik"] * 2.2, g["ik_input_pose_skeleton"], t["other"], what="ik input")
    _close(o["pred_xyz_hybrik_struct"], g["pred_xyz_hybrik_struct"], t["other"], what="struct")
    _close(o["pred_xyz_full"], g["pred_xyz_full"], t["other"], what="xyz_full")
    _close(o["pred_xyz_full"] * 2.2, g["ik_output_joints"], t["other"], what="ik joints")
    _close(o["pred_uv_full"], g["pred_uv_full"], t["uvd"], what="uv_full")
    _close(o["pred_theta_mat"], g["pred_theta_mat"], t["theta"], what="theta")
    # no further from the exact rotations than the official float32 run is
    official = np.abs(g["pred_theta_mat"] - g["f64_pred_theta_mat"]).max()
    _close(o["pred_theta_mat"], g["f64_pred_theta_mat"], F64_FACTOR * official,
           what="theta vs float64")
    _close(o["pred_theta_quat"], g["pred_theta_quat"], t["theta"], what="quat")
    _close(o["pred_vertices"], g["pred_vertices"], t["verts"], what="vertices")
    # derived quantities of the reference
    box = g["bbox_xyxy_input"]
    bw = box[2] - box[0]
    _close(_np(o["pred_uvd_jts"])[:, :2] * bw + (box[:2] + box[2:]) / 2, g["pred_uv_px"],
           t["uvd"], rel=True, what="uv px")
    rot = _np(o["pred_theta_mat"])
    assert np.abs(rot @ np.swapaxes(rot, -1, -2) - np.eye(3)).max() < 2e-3


def test_flip_test_matches_the_regression_model(model):
    g, _, _, f = run("hrnetx48_rle", model)
    t = TOL["hrnetx48_rle"]
    for key in ("pred_uvd_jts", "pred_sigma", "maxvals", "pred_phi", "pred_shape_full",
                "pred_camera"):
        _close(f[key], g["flip_" + key], t["other"], what=key)
    _close(f["cam_scale"], g["flip_cam_scale"], t["cam"], rel=True, what="scale")
    _close(f["cam_root"], g["flip_cam_root"], t["cam"], rel=True, what="root")
    _close(f["pred_theta_mat"], g["flip_pred_theta_mat"], t["theta"], what="theta")


def test_flip_test_of_the_heatmap_model(model):
    """The heads that do not depend on the uv-heatmap shift match; the
    official shift (an in-place copy over overlapping slices) is undefined,
    here it is the intended one-pixel shift, so uvd differ from the
    reference's flip run by design (README: flip changes uvd by up to 0.47)."""
    g, _, o, f = run("hrnetx48", model)
    for key in ("pred_sigma", "pred_phi", "pred_shape_full", "pred_camera"):
        _close(f[key], g["flip_" + key], 1e-4, what=key)
    uvd, ref = _np(f["pred_uvd_jts"]), g["flip_pred_uvd_jts"]
    np.testing.assert_allclose(uvd[:, 2], ref[:, 2], atol=1e-4)   # depth has no shift
    # mirrored averaging keeps the prediction near the plain one
    assert np.abs(uvd - _np(o["pred_uvd_jts"])).max() < 0.5


def solve_float64(g, pipe, **kw):
    """The pipeline's refinement, IK and skinning in float64 on the golden
    file's float64 heads (``g``: the golden arrays)."""
    f64 = modelx.HybrIKXPipeline.__new__(modelx.HybrIKXPipeline)
    f64.__dict__.update(pipe.__dict__)
    f64.body = pipe.body.to(dtype=torch.float64)
    T = lambda k: torch.from_numpy(np.ascontiguousarray(g[k]))[None]  # noqa: E731
    heads = {"uvd": T("f64_pred_uvd_jts"), "sigma": T("f64_pred_sigma"),
             "maxvals": T("f64_maxvals"), "shape": T("f64_pred_shape_full"),
             "phi": T("f64_pred_phi"), "cam": T("f64_pred_camera")}
    return f64.solve(heads, g["bbox_xyxy_input"][None].astype(np.float64),
                     g["img_center"][None], vertices=True, **kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_float64_solution_matches_the_official_float64_run(arch, model):
    """Refinement, IK and skinning in float64 on the reference's float64
    heads agree with the official float64 run to 1e-9: far below the float32
    noise floor of the README (1e-3 for the heatmap model's rotations)."""
    g, pipe, _, _ = run(arch, model)
    o = solve_float64(g, pipe, trace=True)
    assert o["pred_theta_mat"].dtype == torch.float64
    np.testing.assert_allclose([float(s["init"][0]) for s in o["trace"][1:]] +
                               [float(o["cam_scale"][0])], g["f64_update_scale_out"], rtol=1e-9)
    for key in ("cam_scale", "cam_root", "transl", "pred_xyz_hybrik", "pred_xyz_hybrik_struct",
                "pred_xyz_full", "pred_uv_full", "pred_theta_mat", "pred_theta_quat",
                "pred_vertices"):
        _close(o[key], g["f64_" + key], 1e-9, rel=key in ("cam_scale", "cam_root", "transl"),
               what=key)


@pytest.mark.skipif(not os.environ.get("HYBRIK_SLOW_TESTS"), reason="HYBRIK_SLOW_TESTS=1")
@pytest.mark.parametrize("arch", ARCHS)
def test_float64_network_matches_the_official_float64_run(arch, model):
    g = golden(arch)
    state = synthetic_state(manifest(arch), arch, seed=1, rest_points71=model.rest_points())
    pipe = modelx.build_pipeline_x(arch, state, model, precision="fp64")
    o = pipe(torch.from_numpy(g["input_tensor"]), g["bbox_xyxy_input"][None],
             g["img_center"][None], vertices=True)
    _close(o["img_feat"], g["f64_feat_pooled"], 1e-9, what="feat")
    for key in ("pred_uvd_jts", "pred_sigma", "pred_phi", "pred_shape_full", "cam_scale",
                "pred_theta_mat", "pred_vertices"):
        _close(o[key], g["f64_" + key], 1e-9, what=key)


def test_batches_give_the_same_rows(model):
    """A crop gives the same outputs alone and inside a batch (with another
    crop), so batching and chunking change nothing."""
    g, pipe, o, _ = run("hrnetx48_rle", model)
    x = torch.from_numpy(g["input_tensor"])
    other = torch.roll(x, 17, dims=3)
    pipe.chunk = None          # both crops in one network call
    try:
        both = pipe(torch.cat([other, x]), np.repeat(g["bbox_xyxy_input"][None], 2, 0),
                    np.repeat(g["img_center"][None], 2, 0))
    finally:
        pipe.chunk = 4
    # without the whole mesh: the same joints, leaves and head top
    for key in ("pred_uvd_jts", "cam_root", "pred_theta_mat", "pred_xyz_full",
                "pred_xyz_hybrik_struct", "head_top"):
        assert torch.abs(both[key][1] - o[key][0]).max() < 1e-5, key
    assert "pred_vertices" not in both
    assert torch.abs(both["pred_uvd_jts"][0] - o["pred_uvd_jts"][0]).max() > 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_matches_the_reference(arch, model):
    """On a GPU: float32 (TF32 off) within the README's tolerances; float16
    autocast (the default there) close to them and finite."""
    g = golden(arch)
    state = synthetic_state(manifest(arch), arch, seed=1, rest_points71=model.rest_points())
    args = (torch.from_numpy(g["input_tensor"]), g["bbox_xyxy_input"][None], g["img_center"][None])
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        pipe = modelx.build_pipeline_x(arch, state, model, device="cuda", amp=False)
        o = {k: v.cpu() if torch.is_tensor(v) else v for k, v in pipe(*args).items()}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    t = TOL[arch]
    _close(o["pred_uvd_jts"], g["pred_uvd_jts"], t["uvd"], what="uvd")
    _close(o["pred_phi"], g["pred_phi"], t["other"], what="phi")
    _close(o["cam_root"], g["cam_root"], t["cam"], rel=True, what="cam_root")
    _close(o["pred_theta_mat"], g["pred_theta_mat"], t["theta_cuda"], what="theta")
    pipe = modelx.build_pipeline_x(arch, state, model, device="cuda")
    assert pipe.amp
    o = {k: v.cpu() if torch.is_tensor(v) else v for k, v in pipe(*args).items()}
    assert all(torch.isfinite(o[k]).all() for k in ("pred_theta_mat", "cam_root", "pred_phi"))
    _close(o["pred_phi"], g["pred_phi"], 2e-2, what="phi (float16)")
    if arch == "hrnetx48_rle":   # the heatmap model's refinement amplifies rounding
        _close(o["pred_uvd_jts"], g["pred_uvd_jts"], 2e-2, what="uvd (float16)")
