"""Hands in the worker: mediapipe's hand landmarks on a real photo, seeded
from the pose, the side taken from the pose (a mirrored photo swaps it), the
fingers solved into rotations that reproject onto what the landmarker saw,
and --hands through the CLI, the batch options, the add-on's job line and
resume."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hybrik_blender.core.body import hand as hk
from hybrik_blender.core.body.kinematics import forward_kinematics
from hybrik_blender.core.formats.result import load_result
from hybrik_blender.worker import capture as cap
from hybrik_blender.worker.landmarks import hands as wh
from tests.conftest import DATA, ROOT

# Middlebury's "Basketball" frames as shipped in OpenCV's samples: a man
# catching a ball, 640x480, his right hand open and visible.
PHOTO = os.path.join(DATA, "basketball1.png")
RIGHT = 1


def photo_folder(path, flip=False, n=6):
    path.mkdir()
    img = cv2.imread(PHOTO)
    if flip:
        img = cv2.flip(img, 1)
    for i in range(n):
        cv2.imwrite(str(path / f"f{i:02d}.png"), img)
    return str(path)


@pytest.fixture(scope="module")
def takes(tmp_path_factory):
    out = {}
    for name, flip in (("photo", False), ("mirrored", True)):
        folder = photo_folder(tmp_path_factory.mktemp(name) / "frames", flip)
        res = cap.run_capture(cap.CaptureOptions(video=folder, out=folder + ".npz", hands=True))
        out[name] = (res, load_result(folder + ".npz"))
    return out


def fingertip_errors(take, side):
    """Per seen frame and finger: the solved finger (knuckle -> tip, from the
    result's rotations through forward kinematics of the rest hand, with the
    final wrist of the body) projected at the wrist's depth from the
    observed knuckle, vs the fingertip the landmarker found in the image; in
    finger lengths. Also the same for mediapipe's own 3D landmarks (the
    floor any 3D solution can reach)."""
    s = ("left", "right").index(side)
    img, world = take.extras["hand_image"], take.extras["hand_world"]
    glob, _ = forward_kinematics(take.rotmats.astype(np.float64), np.zeros((24, 3)))
    fk = hk.hand_fk(take.hand_rotmats[:, 15 * s:15 * s + 15], glob[:, 20 + s],
                    hk.average_hand_rest(side))
    f = take.focal_length[0]
    ours, theirs = [], []
    for i in np.nonzero(take.extras["hand_score"][:, s] >= 0.5)[0]:
        z = take.joints29[i, 20 + s, 2]
        for mcp, tip in ((1, 4), (5, 8), (9, 12), (13, 16), (17, 20)):
            seen = img[i, s, tip, :2] - img[i, s, mcp, :2]
            w = world[i, s, tip] - world[i, s, mcp]
            v = fk[i, tip] - fk[i, mcp]
            pred = f / z * np.linalg.norm(w) / np.linalg.norm(v) * v[:2]
            ours.append(np.linalg.norm(pred - seen) / np.linalg.norm(seen))
            theirs.append(np.linalg.norm(f / z * w[:2] - seen) / np.linalg.norm(seen))
    return np.array(ours), np.array(theirs)


@pytest.mark.parametrize("name,side", [("photo", "right"), ("mirrored", "left")])
def test_real_photo_hand_found_on_the_pose_side_and_reprojected(takes, name, side):
    res, take = takes[name]
    s = ("left", "right").index(side)
    assert take.body_model == "smpl"  # the body stays what it was solved on
    assert take.hand_rotmats.shape == (6, 30, 3, 3) and take.hand_confidence.shape == (6, 30)
    score = take.extras["hand_score"]
    assert (score[:, s] >= 0.5).all()  # the open hand is found in every frame
    # at the pose's wrist of that side (the mirrored photo swaps the sides)
    wrist = take.extras["mp_image"][:, 15 + s]
    hand_wrist = take.extras["hand_image"][:, s, 0, :2]
    forearm = np.linalg.norm(take.extras["mp_image"][:, 15 + s] - take.extras["mp_image"][:, 13 + s],
                             axis=-1)
    assert (np.linalg.norm(hand_wrist - wrist, axis=-1) < 0.35 * forearm).all()
    assert take.hand_confidence[:, 15 * s:15 * s + 15].mean() > 0.6
    ours, theirs = fingertip_errors(take, side)
    assert np.median(ours) < 0.3
    assert np.median(ours) < np.median(theirs) + 0.1
    # the fingers are not the relaxed fallback: the hand is open
    relaxed = hk.params_to_local(hk.relaxed_params()[None], hk.hand_geometry(
        hk.average_hand_rest(side), side))
    from hybrik_blender.core.rotations import rotation_angle
    diff = np.degrees(rotation_angle(np.swapaxes(relaxed, -1, -2) @ take.hand_rotmats[:, 15 * s:
                                                                                   15 * s + 15]))
    assert diff.mean() > 10


def test_roi_rules():
    # an upright hand (fingers up in the image): no rotation, the region
    # shifted towards the fingers and twice the size of the palm
    lm = np.zeros((21, 3))
    lm[:, 0] = np.linspace(-20, 20, 21)
    lm[:, 1] = np.linspace(0, -60, 21)
    lm[0] = [0, 0, 0]
    lm[[5, 9, 13]] = [[-15, -50, 0], [0, -52, 0], [15, -50, 0]]
    centre, size, rot = wh.landmarks_to_roi(lm)
    assert abs(rot) < 0.05
    assert centre[1] < -20 and size > 2 * 40
    # from the pose: wrist -> knuckles pointing right: rotated 90 degrees
    c, size, rot = wh.pose_to_roi([100, 100], [120, 100], 3.5)
    assert rot == pytest.approx(np.pi / 2) and size == pytest.approx(70)
    assert c[0] > 100


def test_no_pose_no_hands_and_chunk_reset():
    t = wh.HandTracker(64, 48)
    try:
        out = t(0, np.zeros((48, 64, 3), np.uint8), None, None)
        assert not out["hand_score"].any() and out["hand_world"].shape == (2, 21, 3)
        assert t.calls == 0
        # wrists not visible: nothing runs either
        out = t(1, np.zeros((48, 64, 3), np.uint8), np.zeros((33, 2)), np.zeros(33))
        assert not out["hand_score"].any() and t.calls == 0
    finally:
        t.close()
    with pytest.raises(ValueError):
        wh.HandTracker(64, 48, complexity=2)


def test_cli_flags_and_job_line(tmp_path):
    from hybrik_blender.blender import jobs
    from hybrik_blender.worker import batch
    assert "--hands" in jobs.capture_args("py", "v.mp4", "o.npz", hands=True)
    assert "--hands" not in jobs.capture_args("py", "v.mp4", "o.npz")
    assert batch.BatchOptions(inputs=[], out_dir="x", hands=True).hands
    folder = photo_folder(tmp_path / "frames", n=2)
    out = str(tmp_path / "take.npz")
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "hybrik_blender.worker", "capture", folder,
                        "--out", out, "--hands"], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert any(e.get("stage") == "hands" for e in events)
    take = load_result(out)
    assert take.hand_rotmats is not None and "hand_world" in take.extras
    # a result made with hands cannot be resumed without, and vice versa
    with pytest.raises(cap.CaptureError, match="with --hands"):
        cap.run_capture(cap.CaptureOptions(video=folder, out=out, resume=True))
    plain = str(tmp_path / "plain.npz")
    cap.run_capture(cap.CaptureOptions(video=folder, out=plain))
    assert load_result(plain).hand_rotmats is None
    with pytest.raises(cap.CaptureError, match="without --hands"):
        cap.run_capture(cap.CaptureOptions(video=folder, out=plain, resume=True, hands=True))


def test_resume_with_hands_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    """Cancelled past a tracker chunk boundary, resumed: the kept rows carry
    their hand landmarks and the result equals one uninterrupted run. (The
    chunk is shortened from 256 to 4 frames to keep the test short.)"""
    from hybrik_blender.worker.detect import tracking
    monkeypatch.setattr(tracking, "CHUNK", 4)
    monkeypatch.setattr(cap, "CHUNK", 4)
    folder = photo_folder(tmp_path / "frames", n=10)
    whole = str(tmp_path / "whole.npz")
    cap.run_capture(cap.CaptureOptions(video=folder, out=whole, hands=True, batch_size=2))
    part = str(tmp_path / "part.npz")
    token = cap.CancelToken()

    def progress(ev):
        if ev.get("stage") == "capture" and ev["done"] >= 6:
            token.set()
    with pytest.raises(cap.CaptureError):
        cap.run_capture(cap.CaptureOptions(video=folder, out=part, hands=True, batch_size=2),
                        progress=progress, cancel=token)
    first = load_result(part)
    assert not first.complete and first.num_frames >= 6
    assert (first.extras["hand_score"][:, RIGHT] >= 0.5).all()
    cap.run_capture(cap.CaptureOptions(video=folder, out=part, hands=True, batch_size=2,
                                       resume=True))
    a, b = load_result(whole), load_result(part)
    assert a.num_frames == b.num_frames == 10
    np.testing.assert_array_equal(a.extras["hand_score"], b.extras["hand_score"])
    np.testing.assert_allclose(a.extras["hand_world"], b.extras["hand_world"], atol=1e-6)
    np.testing.assert_allclose(a.hand_rotmats, b.hand_rotmats, atol=1e-5)
    np.testing.assert_allclose(a.rotmats, b.rotmats, atol=1e-5)
