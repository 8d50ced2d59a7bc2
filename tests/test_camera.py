"""The camera solver against a known truth: synthetic pans of a real photo
with a real person cut-out (tests/pans.py), a real clip from a static camera
(vtest, Debian's opencv-doc), and cameras that move through the scene."""
import types

import cv2
import numpy as np
import pytest

from hybrik_blender.worker.camera import finish_camera, start_camera
from hybrik_blender.worker.camera import geometry as geo
from hybrik_blender.worker.camera.solver import CameraSolver
from tests.conftest import DATA
from tests.pans import angle_deg, euler_yxz, pan_path, render_pan, render_walk_with_camera

STATIC_CLIP = f"{DATA}/vtest_static.mp4"


def solve(frames, boxes=None, size=(320, 240), **kw):
    s = CameraSolver(*size, **kw)
    for i, f in enumerate(frames):
        s.feed(i, cv2.cvtColor(f, cv2.COLOR_BGR2RGB), [] if boxes is None else [boxes[i]])
    return s, s.finish()


@pytest.fixture(scope="module")
def pan300():
    rot = pan_path(300)
    frames, focal, boxes = render_pan(rot, person="still")
    return rot, frames, focal, boxes


@pytest.fixture(scope="module")
def walk300():
    rot = pan_path(300, 10.0, 4.0, 5.0, cycles=(0.75, 1.25, 1.0))
    frames, focal, boxes = render_pan(rot, person="walk", walk_px=160)
    return rot, frames, focal, boxes


def test_pan_with_known_focal(pan300):
    rot, frames, focal, boxes = pan300
    _, est = solve(frames, boxes, focal=focal)
    err = angle_deg(rot, est.rotation)
    assert est.mode == "moving" and not est.focal_estimated
    assert err.max() < 0.2, err.max()                  # accumulated over 300 frames
    assert est.max_angle_deg > 10 and est.translation_frames < 0.05 and not est.warnings


@pytest.mark.parametrize("clip", ["pan300", "walk300"])
def test_pan_with_estimated_focal(request, clip):
    rot, frames, focal, boxes = request.getfixturevalue(clip)
    _, est = solve(frames, boxes)                      # starts from a 65 degree guess
    assert est.focal_estimated
    assert abs(est.focal / focal - 1) < 0.02, (est.focal, focal)
    assert angle_deg(rot, est.rotation).max() < 0.2


def test_unmasked_person_is_an_outlier_not_the_camera(walk300):
    """Without the person's box the walker's own motion must not bend the
    camera much (RANSAC); with it the error is smaller still."""
    rot, frames, focal, boxes = walk300
    _, masked = solve(frames, boxes, focal=focal)
    _, bare = solve(frames, None, focal=focal)
    assert angle_deg(rot, masked.rotation).max() < 0.2
    assert angle_deg(rot, bare.rotation).max() < 1.0


def test_real_static_clip_does_not_drift():
    cap = cv2.VideoCapture(STATIC_CLIP)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == 240
    h, w = frames[0].shape[:2]
    for mode in ("auto", "moving"):
        _, est = solve(frames, size=(w, h), mode=mode)
        drift = geo.rotation_angle_deg(est.rotation).max()
        assert drift < 0.1, (mode, drift)
        assert est.mode == ("static" if mode == "auto" else "moving")
    assert np.allclose(est.track().rotation, est.rotation)


@pytest.mark.parametrize("forward", [False, True], ids=["sideways", "forward"])
def test_moving_through_the_scene_is_reported_and_falls_back(forward):
    frames, focal = render_walk_with_camera(90, forward=forward,
                                            speed_m=0.01 if forward else 0.02)
    _, est = solve(frames, focal=focal)
    assert est.mode == "static" and est.translation_frames > 0.25
    assert any("moves through the scene" in w and "camera space" in w for w in est.warnings)
    assert np.allclose(est.track().rotation, np.eye(3))
    _, forced = solve(frames, focal=focal, mode="moving")
    assert forced.mode == "moving" and any("as asked" in w for w in forced.warnings)


def test_static_mode_solves_nothing(pan300):
    rot, frames, focal, boxes = pan300
    _, est = solve(frames[:5], boxes, mode="static")
    assert est.mode == "static" and np.allclose(est.rotation, np.eye(3))
    with pytest.raises(ValueError):
        CameraSolver(320, 240, mode="sideways")


def test_large_frames_are_solved_at_the_working_size(pan300):
    """A 960x720 pan is tracked at 640x480; rotations and focal length come
    back in the video's own pixels."""
    rot = pan_path(40, 6.0, 3.0, 2.0)
    frames, focal, boxes = render_pan(rot, size=(960, 720), canvas_scale=3.0, person="still")
    s, est = solve(frames, boxes, size=(960, 720), focal=focal)
    assert s.size == (640, 480)
    assert angle_deg(rot, est.rotation).max() < 0.2 and est.focal == focal


def test_resume_replays_the_kept_frames(pan300):
    """start_camera with the rows a resumed capture keeps gives the same
    track as feeding every frame in one go."""
    rot, frames, focal, boxes = pan300
    frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames[:60]]

    class Source:
        def frames(self, start, end):
            for i in range(start, end):
                yield i, i / 30.0, frames[i]
    opts = types.SimpleNamespace(camera="auto", focal_length=None)
    info = types.SimpleNamespace(width=320, height=240)
    whole = start_camera(opts, info, focal, Source())
    for i, f in enumerate(frames):
        whole.feed(i, f, [boxes[i]])
    kept = [{"index": i, "valid": True, "bbox": boxes[i]} for i in range(35)]
    resumed = start_camera(opts, info, focal, Source(), kept)
    for i in range(35, 60):
        resumed.feed(i, frames[i], [boxes[i]])
    a, b = finish_camera(whole, None, focal), finish_camera(resumed, None, focal)
    assert np.array_equal(a.rotation, b.rotation) and a.focal == b.focal
    static = finish_camera(None, np.arange(5), 300.0)
    assert static.mode == "static" and static.track().rotation.shape == (5, 3, 3)


def test_procrustes_and_focal_on_exact_pairs():
    rng = np.random.default_rng(0)
    f, c = 500.0, (320.0, 240.0)
    rot = euler_yxz(np.radians([8.0, -4, 6, 10]), np.radians([3.0, 2, -5, 1]),
                    np.radians([5.0, -6, 1, 0]))
    pts = rng.uniform([0, 0], [640, 480], (4, 80, 2))
    bearing = geo.bearings(pts, f, c)
    moved = np.einsum("nij,nkj->nki", np.swapaxes(rot, -1, -2), bearing)
    back = moved[..., :2] / moved[..., 2:] * f + np.array(c)
    w = np.ones((4, 80))
    r, res = geo.robust_rotation(pts, back, w, f, c)
    assert np.abs(r - rot).max() < 1e-9 and res.max() < 1e-6
    got, curvature = geo.estimate_focal(pts, back, w, c, 380.0)
    assert abs(got - f) < 0.05 and curvature > 1
