"""Hands in core: the rest hands, the analytic finger IK (exact on hands made
by forward kinematics), the limits, the wrist/forearm reconciliation and
the temporal handling (relaxed when unseen, no jitter, bad frames)."""
import os
import types

import numpy as np
import pytest

from hybrik_blender.core import rotations as R
from hybrik_blender.core.body import hand as hk
from hybrik_blender.core.body.kinematics import forward_kinematics
from hybrik_blender.core.body.skeleton import HAND_JOINT_NAMES, SMPLX_PARENTS
from hybrik_blender.core.motion import hands as mh
from tests.conftest import DATA

SMPLX_HANDS = os.path.join(DATA, "synthetic_smplx_hands.npz")


def smplx_rest(side):
    """The synthetic SMPL-X model's rest hand (golden_x), through
    hand_rest_from_smplx with a full-size vertex array."""
    with np.load(SMPLX_HANDS) as d:
        joints, tips = d["joints"], d[f"{side}_tips"]
    verts = np.zeros((10475, 3))
    verts[list(hk.SMPLX_TIP_VERTICES[side])] = tips
    return hk.hand_rest_from_smplx(joints, verts, side)


def perturbed_rest(side, seed=3):
    """An irregular hand: curved, non-planar fingers, a bent thumb."""
    rng = np.random.default_rng(seed)
    return hk.average_hand_rest(side) + rng.normal(0, 0.004, (20, 3))


RESTS = {"average": hk.average_hand_rest, "smplx": smplx_rest, "irregular": perturbed_rest}


def random_params(n, rng, margin=0.9):
    p = rng.uniform(hk.PARAM_LOW, hk.PARAM_HIGH, (n, hk.NUM_PARAMS)) * margin
    p[:, 16:18] *= 0.6  # keep the swing vector inside its cone
    return p


def landmarks_from(params, geom, rest, rng):
    """Forward kinematics -> landmarks in a random frame, scale and origin."""
    n = len(params)
    g = R.axis_angle_to_matrix(rng.normal(0, 1.5, (n, 3)))
    local = hk.params_to_local(params, geom)
    lm = hk.hand_fk(local, g, rest)
    scale = rng.uniform(0.7, 1.4, (n, 1, 1))
    return lm * scale + rng.normal(0, 1, (n, 1, 3)), local, g


def angle_deg(a, b):
    return np.degrees(R.rotation_angle(np.swapaxes(a, -1, -2) @ b))


# --- rest hands ----------------------------------------------------------------

def test_average_hand_layout_and_proportions():
    left, right = hk.average_hand_rest("left"), hk.average_hand_rest("right")
    assert left.shape == right.shape == (20, 3)
    np.testing.assert_allclose(right, left * [-1, 1, 1])
    lm = hk.rest_landmarks(left)
    # fingers along +X for the left hand, index to the front (+Z), little finger behind
    assert np.all(lm[[8, 12, 16, 20], 0] > 0.14)
    assert lm[5, 2] > lm[9, 2] > lm[13, 2] > lm[17, 2]
    assert lm[4, 2] > lm[5, 2]  # the thumb is in front of the index
    # hand length 0.108 H, wrist to middle knuckle 0.05 H (as the average skeleton)
    assert np.linalg.norm(lm[12]) == pytest.approx(0.108 * 1.70, rel=0.02)
    assert np.linalg.norm(lm[9]) == pytest.approx(0.05 * 1.70, rel=0.02)
    # the middle finger's segments in the proportions 1 : 0.62 : 0.57
    seg = np.linalg.norm(np.diff(lm[[9, 10, 11, 12]], axis=0), axis=1)
    np.testing.assert_allclose(seg / seg[0], [1, 0.62, 0.57], atol=0.02)
    # scales with stature
    np.testing.assert_allclose(hk.average_hand_rest("left", 1.87), left * 1.1)
    with pytest.raises(ValueError):
        hk.average_hand_rest("middle")


def test_rest_from_smplx_uses_joints_and_fingertip_vertices():
    rest = smplx_rest("left")
    with np.load(SMPLX_HANDS) as d:
        joints, tips = d["joints"], d["left_tips"]
    np.testing.assert_allclose(rest[:15], joints[25:40] - joints[20])
    np.testing.assert_allclose(rest[15:], tips - joints[20])
    # the joints follow SMPL-X's hand order and tree: each joint 2/3 hangs
    # from the previous one, each joint 1 from the wrist
    names = HAND_JOINT_NAMES[:15]
    assert names[0] == "left_index1" and names[12] == "left_thumb1"
    assert [SMPLX_PARENTS[25 + 3 * f] for f in range(5)] == [20] * 5
    right = smplx_rest("right")
    np.testing.assert_allclose(right, rest * [-1, 1, 1], atol=1e-9)  # mirrored model


def test_rest_hands_from_an_smplx_body_model():
    """The worker reads a model with 55 regressed joints as SMPL-X."""
    from hybrik_blender.worker.landmarks.hands import rest_hands
    with np.load(SMPLX_HANDS) as d:
        joints = d["joints"]
        tips = {s: d[f"{s}_tips"] for s in ("left", "right")}
    v = np.zeros((10475, 3))
    for s in tips:
        v[list(hk.SMPLX_TIP_VERTICES[s])] = tips[s]
    spare = np.setdiff1d(np.arange(10475), sum((list(t) for t in hk.SMPLX_TIP_VERTICES.values()),
                                               []))[:55]
    v[spare] = joints
    reg = np.zeros((55, 10475))
    reg[np.arange(55), spare] = 1.0
    model = types.SimpleNamespace(v_template=v, shapedirs=np.zeros((10475, 3, 10)),
                                  J_regressor=reg, num_betas=10)
    got = rest_hands(model)
    np.testing.assert_allclose(got["left"], smplx_rest("left"), atol=1e-12)
    np.testing.assert_allclose(rest_hands(None)["right"], hk.average_hand_rest("right"))


# --- IK ------------------------------------------------------------------------------

@pytest.mark.parametrize("rest_name", sorted(RESTS))
@pytest.mark.parametrize("side", ["left", "right"])
def test_ik_recovers_known_finger_poses_within_1_degree(rest_name, side):
    rng = np.random.default_rng(11)
    rest = RESTS[rest_name](side)
    geom = hk.hand_geometry(rest, side)
    params = random_params(3000, rng)
    lm, local, g = landmarks_from(params, geom, rest, rng)
    out = hk.solve_hand(lm, geom)
    # the palm gives the wrist exactly
    assert angle_deg(out["wrist"], g).max() < 1e-6
    err = angle_deg(hk.params_to_local(out["params"], geom), local)
    # every finger joint (index, middle, pinky, ring: joints 0-11), on every pose
    assert err[:, :12].max() < 1.0
    # the thumb wherever its twist is observable: both distal segments bent
    # by 10 degrees or more from the metacarpal (a straight thumb's twist
    # about itself leaves no trace in the landmarks)
    def unit(a, b):
        d = lm[:, b] - lm[:, a]
        return d / np.linalg.norm(d, axis=-1, keepdims=True)
    bend = [np.degrees(np.arccos(np.clip(np.sum(unit(1, 2) * unit(i, j), -1), -1, 1)))
            for i, j in ((2, 3), (3, 4))]
    bent = (bend[0] >= 10) & (bend[1] >= 10)
    assert bent.mean() > 0.6
    assert err[bent, 12:].max() < 1.0
    # and forward kinematics of the solution reproduces every landmark
    fk = hk.hand_fk(hk.params_to_local(out["params"], geom), out["wrist"], rest)
    rel = lm - lm[:, :1]
    scale = np.linalg.norm(rel[:, 9], axis=-1) / np.linalg.norm(fk[:, 9], axis=-1)
    size = np.linalg.norm(rel[:, 12], axis=-1)
    assert (np.abs(fk * scale[:, None, None] - rel).max((1, 2)) / size).max() < 5e-3


def test_ik_parameters_are_anatomical_and_side_independent():
    """The same anatomical pose on a left hand and its mirror image gives
    the same parameters; flexion is positive towards the palm."""
    rng = np.random.default_rng(5)
    rest = hk.average_hand_rest("left")
    gl = hk.hand_geometry(rest, "left")
    gr = hk.hand_geometry(rest @ hk.MIRROR, "right")
    params = random_params(200, rng)
    lm, _, _ = landmarks_from(params, gl, rest, rng)
    left = hk.solve_hand(lm, gl)["params"]
    right = hk.solve_hand(lm @ hk.MIRROR, gr)["params"]
    np.testing.assert_allclose(left, right, atol=1e-6)
    # a curled index finger: its tip goes below the palm (-Y, palms down)
    p = np.zeros((1, hk.NUM_PARAMS))
    p[0, 1:4] = np.radians([60, 60, 30])
    tip = hk.hand_fk(hk.params_to_local(p, gl), np.eye(3)[None], rest)[0, 8]
    assert tip[1] < -0.05


def test_limits_clip_impossible_poses():
    rng = np.random.default_rng(2)
    rest = hk.average_hand_rest("left")
    geom = hk.hand_geometry(rest, "left")
    p = np.zeros((1, hk.NUM_PARAMS))
    p[0, 5] = np.radians(-70)   # middle knuckle bent 70 degrees backwards
    p[0, 10] = np.radians(-60)  # pinky PIP hyperextended
    p[0, 0] = np.radians(50)    # index spread 50 degrees
    lm, _, _ = landmarks_from(p, geom, rest, rng)
    got = np.degrees(hk.solve_hand(lm, geom)["params"][0])
    assert got[5] == pytest.approx(hk.LIMITS_DEG["flexion"][0][0])
    assert got[10] == pytest.approx(hk.LIMITS_DEG["flexion"][1][0])
    assert got[0] == pytest.approx(hk.LIMITS_DEG["abduction"]["index"])
    raw = np.degrees(hk.solve_hand(lm, geom, limits=False)["params"][0])
    assert raw[5] == pytest.approx(-70, abs=1e-6)
    swing = hk.clip_params(np.r_[np.zeros(16), 2.0, 2.0, 0, 0, 0])
    assert np.degrees(np.linalg.norm(swing[16:18])) == pytest.approx(70.0)


def test_bad_input_is_refused():
    geom = hk.hand_geometry(hk.average_hand_rest("left"), "left")
    with pytest.raises(ValueError):
        hk.solve_hand(np.zeros((3, 20, 3)), geom)
    with pytest.raises(ValueError):
        hk.hand_geometry(np.full((20, 3), np.nan), "left")


# --- the wrist -------------------------------------------------------------------------

def arm_chain(n, rng):
    rest = np.zeros((24, 3))
    rest[18], rest[20] = [0.3, 0, 0], [0.55, 0, 0]
    rot = np.tile(np.eye(3), (n, 24, 1, 1))
    rot[:, 0] = R.axis_angle_to_matrix(rng.normal(0, 1, (n, 3)))
    rot[:, 18] = R.axis_angle_to_matrix(rng.normal(0, 0.5, (n, 3)))
    rot[:, 20] = R.axis_angle_to_matrix(rng.normal(0, 0.3, (n, 3)))
    return rest, rot


def test_reconcile_wrist_moves_twist_to_the_forearm():
    rng = np.random.default_rng(4)
    rest, rot = arm_chain(500, rng)
    glob, pos = forward_kinematics(rot, rest)
    # the palm says: the hand is the body's wrist turned by a wrist swing of
    # up to 40 degrees and a forearm roll of up to 80
    swing = R.axis_angle_to_matrix(np.c_[np.zeros(500), rng.uniform(-0.5, 0.5, (500, 2))])
    roll = R.axis_angle_to_matrix(np.c_[rng.uniform(-1.4, 1.4, 500), np.zeros((500, 2))])
    hand = glob[:, 18] @ roll @ rot[:, 20] @ swing
    axis = rest[20] - rest[18]
    elbow, wrist = hk.reconcile_wrist(glob[:, 18], rot[:, 18], rot[:, 20], hand, np.ones(500),
                                      axis)
    new = rot.copy()
    new[:, 18], new[:, 20] = elbow, wrist
    g2, p2 = forward_kinematics(new, rest)
    assert angle_deg(g2[:, 20], hand).max() < 1e-6          # the palm is followed
    np.testing.assert_allclose(p2[:, 20], pos[:, 20], atol=1e-12)  # the wrist stays
    # the wrist keeps the body's own (small) twist: the roll went to the elbow
    tw = lambda m: np.degrees(hk._twist_angle(m, axis / np.linalg.norm(axis)))  # noqa: E731
    np.testing.assert_allclose(tw(wrist), tw(rot[:, 20]), atol=1e-6)
    # weight 0: the body unchanged; weight 0.5: halfway (in angle)
    e0, w0 = hk.reconcile_wrist(glob[:, 18], rot[:, 18], rot[:, 20], hand, np.zeros(500), axis)
    np.testing.assert_allclose(e0, rot[:, 18], atol=1e-9)
    np.testing.assert_allclose(w0, rot[:, 20], atol=1e-9)
    e5, w5 = hk.reconcile_wrist(glob[:, 18], rot[:, 18], rot[:, 20], hand, np.full(500, 0.5),
                                axis)
    new[:, 18], new[:, 20] = e5, w5
    half = angle_deg(forward_kinematics(new, rest)[0][:, 20], glob[:, 20])
    full = angle_deg(hand, glob[:, 20])
    np.testing.assert_allclose(half, full / 2, atol=1e-6)


def test_reconcile_wrist_caps_the_wrist_swing():
    rng = np.random.default_rng(6)
    rest, rot = arm_chain(50, rng)
    rot[:, 20] = np.eye(3)
    glob, _ = forward_kinematics(rot, rest)
    bent = R.axis_angle_to_matrix(np.tile([0.0, 0.0, np.radians(150)], (50, 1)))
    _, wrist = hk.reconcile_wrist(glob[:, 18], rot[:, 18], rot[:, 20], glob[:, 18] @ bent,
                                  np.ones(50), rest[20] - rest[18])
    np.testing.assert_allclose(np.degrees(R.rotation_angle(wrist)), 85.0, atol=1e-6)


# --- over time ----------------------------------------------------------------------------

FPS = 30.0


def fist():
    p = np.zeros(hk.NUM_PARAMS)
    for f in range(4):
        p[4 * f + 1:4 * f + 4] = np.radians([80, 95, 60])
    p[19:21] = np.radians([40, 50])
    return p


def test_unseen_hand_eases_to_relaxed_and_back_without_jumps():
    n = 150
    t = np.arange(n) / FPS
    seen = (t < 1.0) | (t >= 3.0)
    params = np.where(seen[:, None], fist(), 0.0)
    out, weight, _ = mh.smooth_hand_params(params, seen.astype(float), np.ones((n, 5)), t, FPS)
    relaxed = hk.relaxed_params()
    # seen frames keep the pose, and so does the hold; from HOLD + RELAX
    # seconds into the gap on, relaxed
    held = t < 1.0 - 1 / FPS + mh.HOLD_SECONDS - 1e-9
    np.testing.assert_allclose(out[held], np.tile(fist(), (held.sum(), 1)), atol=1e-9)
    lost = mh.HOLD_SECONDS + mh.RELAX_SECONDS
    mid = (t >= 1.0 - 1 / FPS + lost) & (t <= 3.0 - lost)
    np.testing.assert_allclose(out[mid], np.tile(relaxed, (mid.sum(), 1)), atol=1e-9)
    assert np.all(weight[mid] == 0) and np.all(weight[t < 0.9] > 0.99)
    # the ease: smoothstep over 0.5 s: per frame at most 1.5 x the average step
    step = np.abs(np.diff(out, axis=0)).max(0)
    span = np.abs(fist() - relaxed)
    assert np.all(step <= 1.5 * span / (mh.RELAX_SECONDS * FPS) + 1e-9)


def test_a_hand_never_seen_is_relaxed_with_zero_confidence():
    n = 20
    out, weight, pw = mh.smooth_hand_params(np.zeros((n, 21)), np.zeros(n), np.zeros((n, 5)),
                                            np.arange(n) / FPS, FPS)
    np.testing.assert_allclose(out, np.tile(hk.relaxed_params(), (n, 1)))
    assert not weight.any() and not pw.any()


def synthetic_hand_clip(n, rng, noise_m=0.0, wobble=True):
    rest = hk.average_hand_rest("left")
    geom = hk.hand_geometry(rest, "left")
    t = np.arange(n) / FPS
    base = 0.5 * (hk.relaxed_params() + fist())
    params = np.tile(base, (n, 1))
    if wobble:
        params[:, 1:16:4] += 0.3 * np.sin(2 * np.pi * 0.5 * t)[:, None]
    g = np.tile(R.axis_angle_to_matrix(np.array([0.3, -0.5, 0.2])), (n, 1, 1))
    lm = hk.hand_fk(hk.params_to_local(params, geom), g, rest)
    lm = lm + rng.normal(0, noise_m, lm.shape) if noise_m else lm
    return geom, params, lm, t


def test_noisy_landmarks_give_smooth_fingers():
    """Landmark noise (1 mm on an 18 cm hand, 3 degrees per joint): the
    per-frame IK jitters, the smoothed track does not, and stays on the
    true motion."""
    rng = np.random.default_rng(8)
    geom, truth, lm, t = synthetic_hand_clip(300, rng, noise_m=0.001)
    sol = hk.solve_hand(lm, geom)
    out, _, _ = mh.smooth_hand_params(sol["params"], np.ones(300), sol["conditioning"], t, FPS)
    flex = [1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 19, 20]
    jitter = lambda p: np.degrees(np.abs(np.diff(p[:, flex], 2, axis=0))).mean()  # noqa: E731
    assert jitter(out) < 0.2 * jitter(sol["params"])
    assert jitter(out) < 1.0
    assert np.degrees(np.abs(out - truth)[:, flex]).mean() < 2.0


def test_low_confidence_and_single_wrong_frames_are_ignored():
    rng = np.random.default_rng(9)
    geom, truth, lm, t = synthetic_hand_clip(90, rng, wobble=False)
    sol = hk.solve_hand(lm, geom)
    params, conf = sol["params"].copy(), np.ones(90)
    params[20:30] = hk.clip_params(rng.uniform(-2, 2, (10, 21)))  # garbage ...
    conf[20:30] = 0.3                                              # ... flagged low
    params[60] = hk.clip_params(rng.uniform(-2, 2, 21))            # one wrong frame, confident
    out, _, pconf = mh.smooth_hand_params(params, conf, sol["conditioning"], t, FPS)
    err = np.degrees(np.abs(out - truth))
    assert err[:20].max() < 1e-6 and err[31:56].max() < 1e-6
    assert err[20:30].max() < 1e-6      # a short gap between two equal poses: held
    assert err[55:66].max() < 6.0       # the outlier is mostly rejected
    assert pconf[25].max() < 0.01 and pconf[10].min() > 0.9


def test_solve_take_hands_fields_and_untouched_body_without_hands():
    rng = np.random.default_rng(10)
    n = 60
    rot = np.tile(np.eye(3), (n, 24, 1, 1))
    rot[:, 0] = R.axis_angle_to_matrix(np.array([np.pi, 0, 0]))
    rests = {s: hk.average_hand_rest(s) for s in mh.SIDES}
    lms = np.zeros((n, 2, 21, 3))
    geom = hk.hand_geometry(rests["left"], "left")
    glob, _ = forward_kinematics(rot, np.zeros((24, 3)))
    lms[:, 0] = hk.hand_fk(hk.params_to_local(np.tile(fist(), (n, 1)), geom), glob[:, 20],
                           rests["left"])
    scores = np.zeros((n, 2))
    scores[:, 0] = 1.0
    axes = {"left": np.array([1.0, 0, 0]), "right": np.array([-1.0, 0, 0])}
    out = mh.solve_take_hands(rot, lms, scores, np.arange(n) / FPS, FPS, rests, axes)
    assert out["hand_rotmats"].shape == (n, 30, 3, 3)
    assert out["hand_confidence"].shape == (n, 30)
    assert out["hand_confidence"][:, :15].min() > 0.9 and not out["hand_confidence"][:, 15:].any()
    want = hk.params_to_local(np.tile(fist(), (n, 1)), geom)
    assert angle_deg(out["hand_rotmats"][:, :15], want).max() < 0.5
    relaxed = hk.params_to_local(hk.relaxed_params()[None], hk.hand_geometry(rests["right"],
                                                                            "right"))
    assert angle_deg(out["hand_rotmats"][:, 15:], relaxed).max() < 1e-6
    # the right side had no hand: its elbow, wrist and hand joint are the body's
    for j in (19, 21, 23):
        np.testing.assert_allclose(out["rotmats"][:, j], rot[:, j], atol=1e-12)
    # the left palm matched the body's wrist already; the SMPL hand joint curls
    assert angle_deg(out["rotmats"][:, 20], rot[:, 20]).max() < 1e-3
    assert np.degrees(R.rotation_angle(out["rotmats"][:, 22])).min() > 60
