"""The character sits on the person: the 2D alignment metric and refinement,
hidden joints that hold still, and a person who stays put in the world while
the camera pans, on real footage (the sample clip, a real photo) and on
synthetic truth."""
import cv2
import numpy as np
import pytest

from hybrik_blender.core.align import metric
from hybrik_blender.core.align.refine import RefineOptions, align_to_evidence, evidence_weight
from hybrik_blender.core.body.average import average_rest_joints_29
from hybrik_blender.core.motion import hidden, world
from hybrik_blender.core.motion.cleanup import CleanupOptions, clean_take
from hybrik_blender.core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from hybrik_blender.worker import capture as cap
from hybrik_blender.worker.landmarks import body as mpb
from tests.helpers import random_motion
from tests.pans import angle_deg, pan_path, render_pan
from tests.test_worker_capture import photo_frames, write_video


def speeds_deg(rot):
    """(N-1, 24) angle of each joint's local rotation change between frames."""
    rel = np.swapaxes(rot[:-1], -1, -2) @ rot[1:]
    return np.degrees(np.linalg.norm(matrix_to_axis_angle(rel), axis=-1))


def raw_alignment(res):
    """The backend's own fit (no hold, no refinement) against the same evidence."""
    ex = res.extras
    sol = mpb.solve_clip(ex["mp_world"], ex["mp_image"], ex["mp_visibility"], res.valid,
                         res.focal_length, res.principal_point)
    joints, _ = metric.fk29(sol["rotmats"], sol["rest29"][None], sol["root_translation"])
    return metric.reprojection_error(joints, ex["uv29"], ex["uv29_confidence"],
                                     res.focal_length, res.principal_point, res.bbox, res.valid)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from hybrik_blender.core.samples import carphone_path
    out = tmp_path_factory.mktemp("s") / "carphone.npz"
    return cap.run_capture(cap.CaptureOptions(video=carphone_path(), out=str(out)))


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("p")
    video = write_video(folder / "photo.mp4", photo_frames(40, size=(320, 240), step=2))
    events = []
    res = cap.run_capture(cap.CaptureOptions(video=video, out=str(folder / "p.npz")),
                          progress=events.append)
    res.done_event = events[-1]
    return video, res


# --- real footage -----------------------------------------------------------------

def test_sample_clip_sits_on_the_person(sample):
    before = raw_alignment(sample).median_fraction()
    after = metric.result_alignment(sample)
    assert after.points > 200                        # both shoulders in every frame
    assert before > 0.05                             # the backend alone: ~13% of the box
    assert after.median_fraction() <= 0.02, after.summary()
    assert sample.joint_confidence.shape == (120, 24)
    assert sample.camera is not None and sample.camera.mode == "static"


def test_real_photo_drifting_across_the_frame_sits_on_the_person(photo):
    _, res = photo
    before = raw_alignment(res).median_fraction()
    after = metric.result_alignment(res)
    assert after.points > 200 and before > 0.04
    assert after.median_fraction() <= 0.02, after.summary()
    done = res.done_event        # the worker's JSON line says it too
    assert done["camera"] == res.camera.mode and done["focal_px"] > 0
    assert abs(done["alignment"]["after"]["median_box"] - after.median_fraction()) < 1e-4
    assert abs(done["alignment"]["before"]["median_box"] - before) < 1e-4


def test_camera_choice_is_checked(tmp_path, photo):
    video, _ = photo
    with pytest.raises(cap.CaptureError) as err:
        cap.run_capture(cap.CaptureOptions(video=video, out=str(tmp_path / "x.npz"),
                                           camera="sideways"))
    assert err.value.code == cap.EXIT_USAGE and "--camera" in str(err.value)


def test_hidden_joints_of_the_sample_clip_do_not_jitter(sample):
    """No joint moves more than 5 degrees per frame at 30 fps, unless the
    visible landmarks of its bone turn that much; the raw legs do (hidden,
    the detector guesses them anew every frame)."""
    ex = sample.extras
    raw = mpb.solve_clip(ex["mp_world"], ex["mp_image"], ex["mp_visibility"], sample.valid,
                         sample.focal_length, sample.principal_point)["rotmats"]
    assert speeds_deg(raw)[:, [1, 2, 4, 5]].max() > 15
    speed = speeds_deg(sample.rotmats.astype(np.float64)) * 30.0 / sample.fps
    vis = ex["mp_visibility"]
    allowed = np.full(speed.shape, 5.0)
    for joint, groups in mpb.ROTATION_LANDMARKS.items():
        for g in groups:
            a, b = g[0], g[-1]
            seen = (vis[:-1, list(g)].min(1) > 0.5) & (vis[1:, list(g)].min(1) > 0.5)
            bone = ex["mp_world"][:, b] - ex["mp_world"][:, a]
            bone /= np.linalg.norm(bone, axis=1, keepdims=True)
            turn = np.degrees(np.arccos(np.clip(np.sum(bone[:-1] * bone[1:], 1), -1, 1)))
            allowed[:, joint] = np.where(seen, np.maximum(allowed[:, joint], turn + 1.0),
                                         allowed[:, joint])
    assert np.all(speed <= allowed), np.unravel_index(np.argmax(speed - allowed), speed.shape)
    # the legs are never seen: they settle on the relaxed pose
    assert sample.joint_confidence[:, [1, 2, 4, 5]].max() < 0.1
    legs = np.swapaxes(hidden.RELAXED[[1, 2, 4, 5]], -1, -2) @ sample.rotmats[-1, [1, 2, 4, 5]]
    assert np.degrees(np.linalg.norm(matrix_to_axis_angle(legs), axis=-1)).max() < 1.0


def test_hybrik_refinement_reduces_the_error_to_its_own_heatmaps(tmp_path, photo):
    """With random weights HybrIK's poses mean nothing, but its 3D joints and
    its 2D heatmap joints disagree, and the refinement must close that gap."""
    from tests.helpers import write_random_checkpoint
    video, _ = photo
    ckpt = write_random_checkpoint(tmp_path / "random.pth")
    be = cap.load_backend(cap.CaptureOptions(video="", out="", backend="hybrik",
                                             checkpoint=str(ckpt)))
    res = cap.run_capture(cap.CaptureOptions(video=video, out=str(tmp_path / "h.npz"),
                                             backend="hybrik", checkpoint=str(ckpt), end=8,
                                             batch_size=8), backend=be)
    before, after = be.alignment["before"], be.alignment["after"]
    assert after["points"] == before["points"] > 0
    assert after["median_box"] < 0.5 * before["median_box"], be.alignment
    got = metric.result_alignment(res, be.body_model)
    assert abs(got.median_fraction() - after["median_box"]) < 1e-3
    assert res.joint_confidence.shape == (8, 24) and "raw_rotmats" in res.extras


def test_person_standing_still_stays_still_while_the_camera_pans(tmp_path):
    """The camera pans over a real photo with a real person standing in it.
    In each frame's camera the root sweeps; in the world (the reference
    camera) it stays put: within 2 cm across the line of sight, where the
    camera rotation decides it. Along the line of sight the distance comes
    from the landmark detector's scale alone: a few percent."""
    n = 90
    rot = pan_path(n, 10.0, 4.0, 3.0, cycles=(0.5, 0.75, 1.0))
    frames, focal, _ = render_pan(rot, person="still", person_height=0.7)
    video = write_video(tmp_path / "pan.mp4", frames, fps=30)
    res = cap.run_capture(cap.CaptureOptions(video=video, out=str(tmp_path / "pan.npz")))
    assert res.valid.all() and res.camera.mode == "moving"
    assert angle_deg(rot, res.camera.rotation).max() < 0.2
    assert abs(res.focal_length[0] / focal - 1) < 0.02
    # smoothed in the world frame; grounding (foot locking) is left out here:
    # it moves the root up and down on purpose, to put the feet on the floor
    cleaned, _ = clean_take(res, None, CleanupOptions(foot_locking="off"))
    for take in (res, cleaned):
        cam_root = take.root_translation.astype(np.float64)
        ref_root = world.to_reference_camera(take).root_translation.astype(np.float64)
        centre = np.median(ref_root, 0)
        sight = centre / np.linalg.norm(centre)
        off = ref_root - centre
        across = off - np.outer(off @ sight, sight)
        assert np.ptp(cam_root, 0)[:2].max() > 0.2                 # the sweep in the image
        assert np.linalg.norm(across, axis=1).max() < 0.02, np.abs(across).max(0)
        distance = np.linalg.norm(ref_root, axis=1)
        assert np.ptp(distance) / np.median(distance) < 0.1
    # with the static assumption the same clip walks the person around
    static = cap.run_capture(cap.CaptureOptions(video=video, out=str(tmp_path / "s.npz"),
                                                camera="static"))
    assert static.camera.mode == "static"
    assert np.ptp(static.root_translation, 0)[:2].max() > 0.2


# --- synthetic truth ----------------------------------------------------------------

def _synthetic_view(n=20, seed=0):
    rest = average_rest_joints_29()[None]
    rot = random_motion(n, seed=seed, spread=0.3)
    root = np.array([0.1, 0.2, 3.0]) + 0.1 * np.random.default_rng(seed).normal(0, 1, (n, 3))
    joints, _ = metric.fk29(rot, rest, root)
    focal, principal = (800.0, 800.0), (320.0, 240.0)
    uv = metric.project(joints, focal, principal)
    box = np.concatenate([uv.min(1), uv.max(1)], 1)
    return rest, rot, root, uv, box, focal, principal


def test_metric_is_zero_on_exact_evidence_and_ignores_unseen_joints():
    rest, rot, root, uv, box, focal, principal = _synthetic_view()
    joints, _ = metric.fk29(rot, rest, root)
    conf = np.ones(uv.shape[:2])
    err = metric.reprojection_error(joints, uv, conf, focal, principal, box)
    assert err.median_px() < 1e-9 and err.points == uv.shape[0] * 29
    shifted = uv + [3.0, 4.0]
    conf[:, 10:] = 0.2
    err = metric.reprojection_error(joints, shifted, conf, focal, principal, box)
    assert abs(err.median_px() - 5.0) < 1e-9 and err.points == uv.shape[0] * 10
    h = box[:, 3] - box[:, 1]
    assert np.allclose(np.nanmedian(err.fraction, 1), 5.0 / h)


def test_refinement_recovers_translation_and_pose():
    """Evidence from a known pose; the estimate starts 15 cm and ~6 degrees
    per joint off; the refinement lands on the evidence."""
    rest, rot, root, uv, box, focal, principal = _synthetic_view()
    rng = np.random.default_rng(5)
    start_rot = rot @ axis_angle_to_matrix(rng.normal(0, np.radians(4), rot.shape[:2] + (3,)))
    start_root = root + rng.normal(0, 0.1, root.shape)
    conf = np.ones(uv.shape[:2])
    valid = np.ones(len(uv), bool)
    only_t = align_to_evidence(start_rot, rest, start_root, uv, conf, valid, focal, principal,
                               box, options=RefineOptions(pose=False))
    full = align_to_evidence(start_rot, rest, start_root, uv, conf, valid, focal, principal, box)
    b, t, f = (only_t["before"].median_fraction(), only_t["after"].median_fraction(),
               full["after"].median_fraction())
    assert f < 0.002 < t < b, (b, t, f)
    assert np.abs(full["root_translation"] - root).max() < 0.05


def test_rotation_jacobian_matches_finite_differences():
    """The pose step's d pixel / d rotation increment, against central
    differences of the projected joints (every active joint, every axis)."""
    from hybrik_blender.core.align import refine
    rest, rot, root, _, _, focal, _ = _synthetic_view()
    rot, root = rot[:3], root[:3]
    principal = (320.0, 240.0)
    active = np.arange(24)
    p, glob = metric.fk29(rot, rest, root)
    jp = refine._projection_jacobian(p, focal)
    jac = refine._rotation_jacobian(jp, p, glob, active)          # (N, 29, 2, A, 3)
    eps = 1e-6
    for j in active:
        for axis in range(3):
            delta = np.zeros(3)
            delta[axis] = eps
            moved = []
            for sign in (1, -1):
                r = rot.copy()
                r[:, j] = rot[:, j] @ axis_angle_to_matrix(sign * delta)
                moved.append(metric.project(metric.fk29(r, rest, root)[0], focal, principal))
            numeric = (moved[0] - moved[1]) / (2 * eps)                # (N, 29, 2)
            np.testing.assert_allclose(jac[:, :, :, j, axis], numeric, atol=1e-4 * focal[0],
                                       err_msg=f"joint {j} axis {axis}")
    assert np.abs(jac).max() > 10.0


def test_refinement_fits_betas_with_a_body_model(body_model):
    from hybrik_blender.core.body.model import rest_joints_29
    betas = np.linspace(-1.5, 1.5, 10)
    rest = rest_joints_29(body_model, betas)[None]
    rot = random_motion(30, seed=2, spread=0.4)
    root = np.array([0.0, 0.2, 3.5]) + np.zeros((30, 3))
    joints, _ = metric.fk29(rot, rest, root)
    uv = metric.project(joints, (900.0, 900.0), (320.0, 240.0))
    box = np.concatenate([uv.min(1), uv.max(1)], 1)
    out = align_to_evidence(rot, rest_joints_29(body_model, np.zeros(10))[None], root, uv,
                            np.ones((30, 29)), np.ones(30, bool), (900.0, 900.0), (320.0, 240.0),
                            box, model=body_model, betas=np.zeros(10),
                            options=RefineOptions(pose=False, beta_prior=10.0))
    assert out["after"].median_fraction() < 0.1 * out["before"].median_fraction()
    # from pictures alone the body's size trades against its distance: the
    # proportions are what the betas recover
    def shape(r):
        r = r[0] - r[0, 0]
        return r / np.linalg.norm(r[15] - r[0])
    assert out["betas"] is not None and np.abs(shape(out["rest29"]) - shape(rest)).max() < 0.01


def test_hold_eases_hidden_joints_and_keeps_seen_ones():
    n, fps = 90, 30.0
    t = np.arange(n) / fps
    rng = np.random.default_rng(0)
    rot = np.tile(np.eye(3), (n, 24, 1, 1))
    rot[:, 18] = axis_angle_to_matrix(np.stack([np.zeros(n), np.zeros(n),
                                                np.linspace(0, 1.0, n)], -1))
    rot[:, 4] = axis_angle_to_matrix(rng.normal(0, 0.6, (n, 3)))      # jumpy guesses
    rot[:, 16] = axis_angle_to_matrix(np.array([0.0, 0.0, 0.8]))
    w = np.ones((n, 24))
    w[:, 4] = 0.0                                 # never seen
    w[30:, 16] = 0.0                              # hidden after one second
    out = hidden.hold_hidden_joints(rot, w, np.ones(n, bool), t, mirror=False)
    assert np.array_equal(out[:, 18], rot[:, 18])                   # seen: untouched
    assert speeds_deg(out)[:, 4].max() <= hidden.MAX_HIDDEN_SPEED_DEG_S / fps + 1e-6
    assert angle_deg(out[-1, 4], hidden.RELAXED[4]) < 1e-6
    # the hidden shoulder keeps its last pose, then eases to the relaxed one
    held = angle_deg(out[30:, 16], rot[29, 16])
    assert held[0] <= hidden.MAX_HIDDEN_SPEED_DEG_S / fps + 1e-6
    assert angle_deg(out[-1, 16], hidden.RELAXED[16]) < \
        0.25 * angle_deg(rot[29, 16], hidden.RELAXED[16])
    # the mirror image of the seen side where it is seen
    m = 180                                       # six time constants
    w2 = np.ones((m, 24))
    w2[:, 17] = 0.0
    out = hidden.hold_hidden_joints(np.tile(rot[:1], (m, 1, 1, 1)), w2, np.ones(m, bool),
                                    np.arange(m) / fps)
    want = np.diag([-1.0, 1, 1]) @ rot[0, 16] @ np.diag([-1.0, 1, 1])
    assert angle_deg(out[-1, 17], want) < 1.0


def test_cleanup_floor_ignores_feet_that_were_not_seen(body_model):
    """A crouching person whose legs go out of sight half-way: the held legs
    (straight, the relaxed pose) reach lower than the real feet did. Weighted
    by the joint confidence the floor stays under the seen feet; without it,
    it drops to the held ones."""
    import dataclasses

    from hybrik_blender.core.motion.synthetic import walk_cycle
    take = walk_cycle(body_model, num_frames=90).result
    rot = take.rotmats.copy()
    rot[:, [1, 2]] = axis_angle_to_matrix(np.array([-0.9, 0.0, 0.0]))
    rot[:, [4, 5]] = axis_angle_to_matrix(np.array([1.5, 0.0, 0.0]))
    rot[:, [7, 8]] = axis_angle_to_matrix(np.array([-0.6, 0.0, 0.0]))
    legs = [1, 2, 4, 5, 7, 8, 10, 11]
    held = rot.copy()
    held[45:, legs] = np.eye(3)
    conf = np.ones((90, 24), np.float32)
    conf[45:, legs] = 0.0
    opt = CleanupOptions(foot_locking="off", smoothing="off")
    _, truth = clean_take(dataclasses.replace(take, rotmats=rot), body_model, opt)
    _, blind = clean_take(dataclasses.replace(take, rotmats=held), body_model, opt)
    _, seen = clean_take(dataclasses.replace(take, rotmats=held, joint_confidence=conf),
                         body_model, opt)
    assert abs(blind[2, 3] - truth[2, 3]) > 0.1           # camera height off by ~20 cm
    assert np.abs(seen - truth).max() < 0.03


def test_world_rows_round_trip_and_clean_up_in_the_world():
    from hybrik_blender.core.formats.result import CameraTrack
    from tests.helpers import make_result
    n = 20
    cam = pan_path(n, 20.0, 5.0, 3.0)
    res = make_result(random_motion(n))
    res.camera = CameraTrack(np.arange(n), cam, np.full(n, 1000.0), "moving")
    ref = world.to_reference_camera(res)
    back = world.to_frame_cameras(ref, res)
    assert np.allclose(back.rotmats, res.rotmats, atol=1e-6)
    assert np.allclose(back.root_translation, res.root_translation, atol=1e-6)
    assert np.allclose(ref.root_translation[5], cam[5] @ res.root_translation[5], atol=1e-6)
    cleaned, matrix = clean_take(res, None, CleanupOptions(foot_locking="off"))
    assert matrix.shape == (4, 4) and cleaned.camera is res.camera
    # cleaned rows are back in each frame's camera: close to the input there
    assert np.abs(cleaned.root_translation - res.root_translation).max() < 0.2
    assert world.frame_camera_to_world(res, np.eye(4)).shape == (n, 4, 4)
    assert np.allclose(evidence_weight(np.array([0.0, 0.5, 1.0])), [0.0, 0.5, 1.0])
