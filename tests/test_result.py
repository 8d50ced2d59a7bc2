import numpy as np
import pytest

from hybrik_blender.core.formats.result import (FORMAT_VERSION, CameraTrack, ResultFormatError,
                                                clip_betas, load_result, load_tracks,
                                                save_result)
from tests.helpers import make_result, random_motion


@pytest.fixture
def result():
    return make_result(random_motion(12))


def _write(path, arrays):
    np.savez(path, **arrays)
    return path


def test_round_trip(tmp_path, result):
    path = tmp_path / "take.npz"
    save_result(path, result)
    back = load_result(path)
    assert back.num_frames == 12 and back.fps == 30.0 and back.complete
    assert np.array_equal(back.rotmats, result.rotmats)
    assert back.image_size == (640, 480) and back.source == "clip.mp4"
    assert not list(tmp_path.glob(".tmp-*"))  # atomic write leaves no temporaries


def test_invalid_frames_get_finite_placeholders():
    rot = random_motion(5)
    rot[2] = np.nan
    res = make_result(rot, valid=np.array([1, 1, 0, 1, 1], bool),
                      root=np.where(np.arange(5)[:, None] == 2, np.nan, 1.0) * np.ones((5, 3)))
    assert np.all(res.rotmats[2] == np.eye(3)) and np.all(res.root_translation[2] == 0)


@pytest.mark.parametrize("mutate,message", [
    (lambda a: a.pop("rotmats"), "missing key.*rotmats"),
    (lambda a: a.update(betas=a["betas"][:, :5]), "'betas' has shape"),
    (lambda a: a["root_translation"].__setitem__((3, 1), np.nan), "NaN"),
    (lambda a: a.update(version=np.array(FORMAT_VERSION + 1)), "newer hybrik-blender"),
    (lambda a: a.update(format=np.array("something")), "not a hybrik-blender result"),
    (lambda a: a.update(frame_index=a["frame_index"][::-1].copy()), "strictly increasing"),
    (lambda a: a.update(rotmats=a["rotmats"] * 2), "not rotation matrices"),
    (lambda a: a.update(fps=np.array(0.0)), "fps must be positive"),
    (lambda a: a.update(confidence=a["confidence"] + 1), "confidence"),
])
def test_reader_refuses_bad_content(tmp_path, result, mutate, message):
    arrays = result.to_arrays()
    mutate(arrays)
    with pytest.raises(ResultFormatError, match=message):
        load_result(_write(tmp_path / "bad.npz", arrays))


def test_truncated_file(tmp_path, result):
    path = tmp_path / "take.npz"
    save_result(path, result)
    data = path.read_bytes()
    for cut in (len(data) // 2, 30, 0):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(ResultFormatError, match="truncated|damaged|not a result"):
            load_result(tmp_path / "cut.npz")


def test_pickled_objects_are_not_loaded(tmp_path, result):
    arrays = result.to_arrays()
    arrays["source"] = np.array([{"evil": 1}], dtype=object)
    with pytest.raises(ResultFormatError, match="not a result file"):
        load_result(_write(tmp_path / "obj.npz", arrays))


def test_missing_file(tmp_path):
    with pytest.raises(ResultFormatError, match="not found"):
        load_result(tmp_path / "nope.npz")


def test_clip_betas_weights_confidence_and_skips_invalid():
    rot = random_motion(3)
    betas = np.array([[1.0] * 10, [3.0] * 10, [100.0] * 10])
    res = make_result(rot, betas=betas, valid=np.array([1, 1, 0], bool),
                      confidence=np.array([0.75, 0.25, 1.0]))
    assert np.allclose(clip_betas(res), 1.5)
    with pytest.raises(ResultFormatError, match="no valid frame"):
        clip_betas(make_result(rot, valid=np.zeros(3, bool)))


def test_backend_extras_round_trip_and_are_checked(tmp_path):
    res = make_result(random_motion(4))
    res.extras["mp_world"] = np.ones((4, 33, 3), np.float32)
    save_result(tmp_path / "a.npz", res)
    back = load_result(tmp_path / "a.npz")
    assert np.array_equal(back.extras["mp_world"], res.extras["mp_world"])
    arrays = res.to_arrays()
    arrays["x_mp_world"] = arrays["x_mp_world"][:3]
    with pytest.raises(ResultFormatError, match="x_mp_world.*4 rows"):
        load_result(_write(tmp_path / "b.npz", arrays))


def _take(n, track_id, **kw):
    res = make_result(random_motion(n), **kw)
    res.track_id = track_id
    return res


def test_several_tracks_round_trip_and_pick(tmp_path):
    a, b = _take(5, 3), _take(8, 1)
    b.valid[:2] = False
    save_result(tmp_path / "m.npz", [a, b])
    takes = load_tracks(tmp_path / "m.npz")
    assert [t.track_id for t in takes] == [1, 3]
    assert np.array_equal(takes[1].rotmats, a.rotmats) and takes[0].num_frames == 8
    assert load_result(tmp_path / "m.npz").track_id == 1  # the most valid frames: 6 vs 5
    assert load_result(tmp_path / "m.npz", track=1).num_frames == 8
    with pytest.raises(ResultFormatError, match="no person 7"):
        load_result(tmp_path / "m.npz", track=7)


def test_version_1_file_loads_as_track_0(tmp_path, result):
    arrays = result.to_arrays()
    for key in ("track", "track_ids", "body_model"):
        arrays.pop(key)
    arrays["version"] = np.array(1, np.int64)
    back = load_result(_write(tmp_path / "v1.npz", arrays))
    assert back.track_id == 0 and back.body_model == "smpl" and back.camera is None


def test_optional_fields_and_camera_round_trip(tmp_path):
    res = _take(6, 0)
    res.hand_rotmats = np.tile(np.eye(3, dtype=np.float32), (6, 30, 1, 1))
    res.hand_confidence = np.full((6, 30), 0.5, np.float32)
    res.joint_confidence = np.ones((6, 24), np.float32)
    res.expression = np.zeros((6, 10), np.float32)
    res.body_model = "smplx"
    res.warnings = ("the video ended at frame 4 of 9",)
    res.camera = CameraTrack(np.arange(6), np.tile(np.eye(3), (6, 1, 1)), np.full(6, 500.0),
                             "moving")
    save_result(tmp_path / "o.npz", res)
    back = load_result(tmp_path / "o.npz")
    assert back.body_model == "smplx" and back.camera.mode == "moving"
    assert np.array_equal(back.hand_confidence, res.hand_confidence)
    assert back.warnings == res.warnings and back.jaw_rotmat is None
    rot, foc = back.camera.at([0, 3, 99])
    assert rot.shape == (3, 3, 3) and np.all(foc == 500.0)


@pytest.mark.parametrize("mutate,message", [
    (lambda a: a.update(root_translation=a["root_translation"].astype(np.float64) * 1e300),
     "NaN|beyond"),
    (lambda a: a.update(frame_index=a["frame_index"] + 2 ** 62), "frame_index"),
    (lambda a: a.update(fps=np.array(1e300)), "fps"),
    (lambda a: a.update(image_size=np.array([2 ** 62, 480])), "image size"),
    (lambda a: a.update(betas=a["betas"].astype(np.float64) + 1e300), "NaN|beyond"),
    (lambda a: a.update(track=a["track"][::-1] + np.arange(12)[::-1]), "grouped"),
    (lambda a: a.update(track_ids=np.array([5])), "track_ids"),
    (lambda a: a.update(hand_rotmats=np.zeros((12, 30, 3, 3), np.float32)), "rotation"),
    (lambda a: a.update(camera_frame_index=np.arange(3)), "camera track needs"),
    (lambda a: a.update(body_model=np.array("mano")), "body_model"),
])
def test_reader_refuses_bad_v2_content(tmp_path, result, mutate, message):
    arrays = result.to_arrays()
    mutate(arrays)
    with pytest.raises(ResultFormatError, match=message):
        load_result(_write(tmp_path / "bad.npz", arrays))
