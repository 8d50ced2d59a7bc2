"""SMPL-X body model: loading (.npz, .pkl, HybrIK-X checkpoint), validation,
shape/expression/children's blend shapes and skinning against the
independent ``smplx.SMPLX`` on the synthetic model of golden_x §1."""
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from hybrik_blender.core import rotations
from hybrik_blender.core.body import model as bm
from hybrik_blender.core.body.average import average_rest_joints_29, average_rest_points_x
from hybrik_blender.core.body.hand import average_hand_rest
from hybrik_blender.core.body.kinematics import lbs
from hybrik_blender.core.body.pose import is_smplx_take, smplx_rotmats
from hybrik_blender.core.body.skeleton import SMPLX_PARENTS
from tests.conftest import SYNTHETIC_SMPLX_KID, SYNTHETIC_SMPLX_MODEL, smplx_oracle
from tests.helpers import make_result, make_smplx_result, random_motion, random_motion_x


@pytest.fixture(scope="module")
def arrays():
    with np.load(SYNTHETIC_SMPLX_MODEL, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def _oracle_forward(sm, rot55, betas, expression, kid=None, transl=None):
    n = len(rot55)
    aa = rotations.matrix_to_axis_angle(np.asarray(rot55, np.float64))
    b = betas if kid is None else np.concatenate([betas, np.asarray(kid)[:, None]], 1)

    def t(a):
        return torch.tensor(np.asarray(a, np.float64))
    kw = {} if transl is None else {"transl": t(transl)}
    with torch.no_grad():
        out = sm(betas=t(b), expression=t(expression), global_orient=t(aa[:, 0]),
                 body_pose=t(aa[:, 1:22].reshape(n, -1)), jaw_pose=t(aa[:, 22]),
                 leye_pose=t(aa[:, 23]), reye_pose=t(aa[:, 24]),
                 left_hand_pose=t(aa[:, 25:40].reshape(n, -1)),
                 right_hand_pose=t(aa[:, 40:55].reshape(n, -1)), **kw)
    return out.vertices.numpy(), out.joints.numpy()


def test_official_layout_loads_and_validates(smplx_model, arrays):
    m = smplx_model
    assert m.model_type == "smplx" and m.is_smplx
    assert (m.num_vertices, m.num_joints, m.num_betas, m.num_expression) == (10475, 55, 10, 10)
    assert m.posedirs.shape == (10475, 3, 486) and m.faces.shape == (20908, 3)
    assert np.array_equal(m.parents, SMPLX_PARENTS)
    assert np.array_equal(m.shapedirs, arrays["shapedirs"][:, :, :10])
    assert np.array_equal(m.expr_dirs, arrays["shapedirs"][:, :, 10:20])
    assert np.array_equal(m.hands_components[0], arrays["hands_componentsl"])
    assert np.array_equal(m.hands_mean[1], arrays["hands_meanr"])
    assert m.joint_names[22:25] == ("jaw", "left_eye", "right_eye")
    # the head top leaf: the highest vertex of the head (1.723 m tall body, top at y 0.420)
    top = m.leaf_vertex_ids[0]
    assert abs(m.v_template[top, 1] - 0.420) < 2e-3 and np.argmax(m.weights[top]) == 15
    assert m.v_template[:, 1].max() == pytest.approx(m.v_template[top, 1])
    assert list(m.leaf_vertex_ids[1:]) == [5058, 7794, 5770, 8463]
    # without the children's template the model has no kid direction
    plain = bm.load_body_model(SYNTHETIC_SMPLX_MODEL)
    assert not plain.has_kid and m.has_kid


def test_children_direction_is_hybrikx_s(smplx_model):
    kid = np.load(SYNTHETIC_SMPLX_KID, allow_pickle=False)
    want = (kid - kid.mean(0)) - smplx_model.v_template
    assert np.abs(smplx_model.kid_dir - want).max() < 1e-15
    # README: a unit coefficient moves vertices by up to 0.58 m
    assert 0.5 < np.linalg.norm(smplx_model.kid_dir, axis=1).max() < 0.65
    plain = bm.load_body_model(SYNTHETIC_SMPLX_MODEL)
    with pytest.raises(ValueError, match="children's template"):
        bm.rest_joints(plain, np.zeros(10), kid=0.3)
    assert np.array_equal(bm.rest_joints(plain, np.zeros(10), kid=0.0),
                          bm.rest_joints(plain, np.zeros(10)))
    with pytest.raises(bm.BodyModelError, match="needs an SMPL-X"):
        bm.with_kid_template(bm.load_body_model(os.path.join(
            os.path.dirname(SYNTHETIC_SMPLX_MODEL), "synthetic_smpl_neutral.npz")), kid)
    with pytest.raises(bm.BodyModelError, match="expected"):
        bm.with_kid_template(plain, kid[:100])


def test_find_kid_template_beside_the_model(tmp_path):
    (tmp_path / "smplx").mkdir()
    model = tmp_path / "smplx" / "SMPLX_NEUTRAL.npz"
    assert bm.find_kid_template(model) is None
    (tmp_path / "smplx_kid_template.npy").write_bytes(b"")
    assert bm.find_kid_template(model) == str(tmp_path / "smplx_kid_template.npy")


@pytest.mark.parametrize("with_kid", [False, True])
def test_skinning_matches_smplx_with_hands_jaw_eyes_expression(smplx_model, with_kid):
    """Random body, fingers, jaw, eyes, betas, expression (and kid) -> the
    same vertices and joints as smplx.SMPLX (float64), correctives included."""
    n = 4
    rng = np.random.default_rng(5)
    rot = rotations.axis_angle_to_matrix(rng.normal(0, 0.5, (n, 55, 3)))
    betas, expr = rng.normal(0, 1.2, (n, 10)), rng.normal(0, 1.2, (n, 10))
    kid = rng.uniform(0, 0.6, n) if with_kid else None
    model = smplx_model if with_kid else bm.load_body_model(SYNTHETIC_SMPLX_MODEL)
    ref_v, ref_j = _oracle_forward(smplx_oracle(n, kid=with_kid), rot, betas, expr, kid)
    v, j = lbs(model, betas, rot, expression=expr, kid=kid)
    assert np.abs(v - ref_v).max() < 1e-6
    assert np.abs(j - ref_j[:, :55]).max() < 1e-6
    # everything above really moves the mesh
    v_nocorr, _ = lbs(model, betas, rot, expression=expr, kid=kid, pose_correctives=False)
    assert np.abs(v - v_nocorr).max() > 3e-3
    v_noexpr, _ = lbs(model, betas, rot, kid=kid)
    assert np.abs(v - v_noexpr).max() > 3e-3
    # and the 24-joint view and the 71 rest points agree with smplx at rest
    with torch.no_grad():
        rest = smplx_oracle(n, kid=with_kid)(
            betas=torch.tensor(betas if kid is None else np.c_[betas, kid]),
            expression=torch.tensor(expr))
    rv, rj = rest.vertices.numpy(), rest.joints.numpy()
    j24 = bm.rest_joints(model, betas, expr, kid)
    assert np.abs(j24[:, :22] - rj[:, :22]).max() < 1e-6
    assert np.abs(j24[:, 22:] - rj[:, [28, 43]]).max() < 1e-6
    pts = bm.rest_points_x(model, betas, expr, kid)
    assert np.abs(pts[:, :55] - rj[:, :55]).max() < 1e-6
    assert np.abs(pts[:, 55:] - rv[:, bm.smplx_tail_vertex_ids(model)]).max() < 1e-6
    leaves = bm.leaf_joints(model, betas, expr, kid)
    assert np.abs(leaves - rv[:, model.leaf_vertex_ids]).max() < 1e-6


def test_hand_pca_matches_smplx(smplx_model):
    """12 PCA coefficients per hand with the mean pose added, as smplx
    computes them (use_pca=True, flat_hand_mean=False)."""
    import smplx
    rng = np.random.default_rng(2)
    coeffs = rng.normal(0, 1, (2, 2, 12))
    sm = smplx.SMPLX(SYNTHETIC_SMPLX_MODEL, ext="npz", use_pca=True, num_pca_comps=12,
                     flat_hand_mean=False, dtype=torch.float64, batch_size=2)
    with torch.no_grad():
        ref = sm(left_hand_pose=torch.tensor(coeffs[0]),
                 right_hand_pose=torch.tensor(coeffs[1])).vertices.numpy()
    aa = np.zeros((2, 55, 3))
    aa[:, 25:40] = bm.hand_pose_from_pca(smplx_model, coeffs[0], "left")
    aa[:, 40:55] = bm.hand_pose_from_pca(smplx_model, coeffs[1], "right")
    v, _ = lbs(smplx_model, np.zeros(10), rotations.axis_angle_to_matrix(aa))
    assert np.abs(v - ref).max() < 1e-6
    flat = bm.hand_pose_from_pca(smplx_model, np.zeros(3), "left", flat_hand_mean=True)
    assert np.array_equal(flat, np.zeros((15, 3)))
    with pytest.raises(ValueError, match="46 hand PCA"):
        bm.hand_pose_from_pca(smplx_model, np.zeros(46), "left")


def test_v11_layout_300_shape_100_expression(arrays):
    """SMPL-X v1.1 stores 300 shape + 100 expression columns: the first 10
    of each are kept (with warnings), expressions read from column 300."""
    rng = np.random.default_rng(0)
    sd = np.zeros((10475, 3, 400))
    sd[:, :, :10] = arrays["shapedirs"][:, :, :10]
    sd[:, :, 10:300] = rng.normal(0, 1e-3, (10475, 3, 290))
    sd[:, :, 300:310] = arrays["shapedirs"][:, :, 10:20]
    sd[:, :, 310:] = rng.normal(0, 1e-3, (10475, 3, 90))
    with pytest.warns(UserWarning) as caught:
        m = bm.body_model_from_arrays(dict(arrays, shapedirs=sd), "SMPLX_NEUTRAL.npz")
    text = " ".join(str(w.message) for w in caught)
    assert "300 shape components" in text and "100 expression components" in text
    assert np.array_equal(m.shapedirs, arrays["shapedirs"][:, :, :10])
    assert np.array_equal(m.expr_dirs, arrays["shapedirs"][:, :, 10:20])


def test_npz_with_object_members_and_pkl_load(tmp_path, arrays):
    """The official SMPL-X .npz also holds dicts (joint2num, part2num) as
    pickled object arrays: they are skipped, never unpickled. A .pkl goes
    through the restricted unpickler (J_regressor as a scipy sparse matrix)."""
    import scipy.sparse
    path = tmp_path / "SMPLX_NEUTRAL.npz"
    extra = {"joint2num": np.array({"pelvis": 0}, dtype=object),
             "part2num": np.array({"global": 0}, dtype=object)}
    np.savez(path, **arrays, **extra)
    with zipfile.ZipFile(path) as zf:
        assert "joint2num.npy" in zf.namelist()
    m = bm.load_body_model(path)
    assert m.is_smplx and np.array_equal(m.v_template, arrays["v_template"])

    bad = tmp_path / "bad.npz"
    np.savez(bad, **dict(arrays, weights=np.array([{"x": 1}], dtype=object)))
    with pytest.raises(bm.BodyModelError, match="'weights' holds Python objects"):
        bm.load_body_model(bad)

    pkl = tmp_path / "SMPLX_NEUTRAL.pkl"
    data = dict(arrays, J_regressor=scipy.sparse.csc_matrix(arrays["J_regressor"]))
    pkl.write_bytes(pickle.dumps(data, protocol=2))
    m2 = bm.load_body_model(pkl)
    for key in ("v_template", "posedirs", "weights", "J_regressor"):
        assert np.array_equal(getattr(m2, key), arrays[key]), key
    assert np.array_equal(m2.expr_dirs, m.expr_dirs)


def test_npz_declaring_a_huge_array_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("v_template.npy", "w") as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 8, 10 ** 3)})
    with pytest.raises(bm.BodyModelError, match="declares .* GiB"):
        bm.load_body_model(path)


def test_hybrikx_checkpoint_buffers_load(tmp_path, smplx_model):
    """A HybrIK-X checkpoint embeds the SMPL-X layer (shapedirs = 10 betas +
    the children's direction, expr_dirs separate), float32."""
    m = smplx_model
    f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    sd = {"preact.conv1.weight": torch.zeros(2, 3, 3, 3),
          "smplx_layer.v_template": f32(m.v_template),
          "smplx_layer.shapedirs": f32(np.concatenate([m.shapedirs, m.kid_dir[:, :, None]], 2)),
          "smplx_layer.expr_dirs": f32(m.expr_dirs),
          "smplx_layer.posedirs": f32(m.posedirs.reshape(-1, 486).T),
          "smplx_layer.J_regressor": f32(m.J_regressor),
          "smplx_layer.lbs_weights": f32(m.weights),
          "smplx_layer.faces_tensor": torch.tensor(m.faces),
          "smplx_layer.parents": torch.tensor(SMPLX_PARENTS),
          "smplx_layer.left_hand_mean": f32(m.hands_mean[0]),
          "smplx_layer.right_hand_mean": f32(m.hands_mean[1])}
    path = tmp_path / "hybrikx_rle_hrnet.pth"
    torch.save({"module." + k: v for k, v in sd.items()}, path)
    got = bm.load_body_model(path)
    assert got.is_smplx and got.has_kid and got.source == "hybrikx_rle_hrnet.pth"
    for key in ("v_template", "shapedirs", "expr_dirs", "posedirs", "kid_dir", "weights"):
        assert np.abs(getattr(got, key) - getattr(m, key)).max() < 1e-6, key
    assert got.hands_components is None and got.hands_mean.shape == (2, 45)


def test_wrong_smplx_files_give_clear_errors(arrays):
    def refused(match, **changes):
        with pytest.raises(bm.BodyModelError, match=match):
            bm.body_model_from_arrays(dict(arrays, **changes), "x.npz")

    refused(r"J_regressor has shape \(52, 10475\), expected \(55, 10475\)",
            J_regressor=arrays["J_regressor"][:52])
    refused(r"weights has shape", weights=arrays["weights"][:, :52])
    refused("15 components; an SMPL-X model has 10 shape",
            shapedirs=arrays["shapedirs"][:, :, :15])
    refused("posedirs has shape", posedirs=arrays["posedirs"][:, :, :207])
    tree = arrays["kintree_table"].copy()
    tree[0, 30] = 20
    refused("kinematic tree is not SMPL-X's", kintree_table=tree)
    nan = arrays["shapedirs"].copy()
    nan[7, 1, 15] = np.nan
    refused("NaN", shapedirs=nan)
    refused(r"hands_componentsl has shape \(12, 45\)",
            hands_componentsl=arrays["hands_componentsl"][:12])
    refused("skinning weights", weights=arrays["weights"] * 1.5)
    one_hand = {k: v for k, v in arrays.items() if k != "hands_componentsr"}
    with pytest.raises(bm.BodyModelError, match="one hand only"):
        bm.body_model_from_arrays(one_hand)
    faces = arrays["f"].astype(np.int64)
    faces[3, 1] = 10475
    refused("faces index vertices outside", f=faces)
    with pytest.raises(bm.BodyModelError, match="an SMPL-X model: choose SMPL-X"):
        bm.body_model_from_arrays(arrays, model_type="smpl")


def test_smplx_rotations_of_a_take():
    rot = random_motion_x(6, seed=1)
    res = make_smplx_result(rot)
    assert is_smplx_take(res)
    assert not is_smplx_take(make_result(random_motion(3)))
    full = smplx_rotmats(res)
    assert np.abs(full - rot).max() < 1e-6
    no_hands = smplx_rotmats(res, hands=False)
    assert np.array_equal(no_hands[:, 25:], np.broadcast_to(np.eye(3), (6, 30, 3, 3)))
    assert np.array_equal(no_hands[:, :25], full[:, :25])
    # an SMPL take: its body, the rest is the identity
    smpl = make_result(random_motion(3, seed=2))
    r = smplx_rotmats(smpl)
    assert np.array_equal(r[:, :22], smpl.rotmats[:, :22].astype(np.float64))
    assert np.array_equal(r[:, 22:], np.broadcast_to(np.eye(3), (3, 33, 3, 3)))


def test_average_smplx_skeleton_has_plausible_hands():
    """The armature-only rest points: the average hand of core.body.hand on
    the average body: fingers in order across the hand, pointing along the
    arm, the proximal phalanx the longest; the right hand the mirror of the
    left; it follows the body's scale."""
    pts = average_rest_points_x()
    left = pts[25:40].reshape(5, 3, 3)           # index, middle, pinky, ring, thumb
    tips_l = pts[61:66]
    for f in range(4):
        chain = np.concatenate([left[f], tips_l[f:f + 1]])
        seg = np.linalg.norm(np.diff(chain, axis=0), axis=1)
        assert np.all(np.diff(chain[:, 0]) > 0) and seg[0] > seg[1:].max(), f
    # across the hand from the thumb side (+z, front) to the pinky: index, middle, ring, pinky
    z = left[[0, 1, 3, 2], 0, 2]
    assert np.all(np.diff(z) < 0)
    assert tips_l[4, 2] > tips_l[0, 2]          # the thumb tip is in front of the index
    assert np.allclose(pts[25:40] - pts[20], average_hand_rest("left")[:15])
    mirror = np.array([-1, 1, 1])
    assert np.allclose(pts[40:55], pts[25:40] * mirror)
    assert np.allclose(pts[66:71], pts[61:66] * mirror)
    hand_len = np.linalg.norm(tips_l[1] - pts[20])
    assert 0.17 < hand_len < 0.20                # ~0.108 of 1.70 m
    big = average_rest_points_x(average_rest_joints_29(1.90))
    assert np.linalg.norm(big[62] - big[20]) / hand_len == pytest.approx(1.9 / 1.7, rel=1e-6)
    with pytest.raises(ValueError, match="hand points"):
        average_rest_points_x(hand_points=np.zeros((15, 3)))
