"""Hand landmarks for one tracked person, seeded from that person's pose.

What runs
---------
mediapipe's own hand landmark subgraph (``HandLandmarkCpu``, the model that
``mediapipe.solutions.hands`` runs, ``hand_landmark_lite``/``_full`` from the
wheel: offline, ``model_complexity`` 0 or 1) in one small graph per hand;
both are fed the same frame and run at the same time on mediapipe's own
threads. There is no palm detector in the loop: as in mediapipe's Holistic,
the region of interest comes from the body.

* **Acquisition**: from the pose's wrist, index and pinky landmarks (the
  hand's direction and size: wrist -> knuckles), a square region around the
  hand, rotated so that the fingers point up, as the landmark model expects.
  If the model finds a hand there, a second pass runs on the region its own
  landmarks give (mediapipe's landmarks-to-ROI rule: the bounding box of the
  palm and finger bases, doubled, shifted 10 % towards the fingers). A miss
  is retried every ``RETRY_EVERY`` frames (so a hidden hand costs little),
  alternating between a tight and a larger region.
* **Tracking**: the next frame starts from the region of the previous
  landmarks while the hand's wrist stays near the pose's wrist.
* **Association**: the side is the side of the *pose's* wrist the hand was
  seeded from and stays at; mediapipe's handedness label is not used (it
  flips between frames on small hands and assumes a mirrored selfie image).
  A result is accepted only if its wrist lies within a gate around that
  pose wrist and its size agrees with the pose's hand. If both sides lock
  on to the same hand (hands together), the hand goes to the nearer wrist
  and the other side is marked not seen.
* The state (previous regions) is dropped at tracker chunk boundaries, like
  the person tracker's, so a resumed capture reproduces an uninterrupted one.

Per frame the tracker returns, for (left, right): 21 image landmarks (x, y
in pixels, z in the same pixel scale, positive away from the camera), 21
world landmarks (metres, camera-aligned axes, origin at the hand's centre),
and a confidence (0 = not seen).

The solve (:func:`add_hands`) turns those into the result's finger rotations
with ``core.motion.hands.solve_take_hands``.
"""
import logging
import os
import threading

import numpy as np

from ...core.body.average import average_rest_joints_29
from ...core.body.hand import average_hand_rest, hand_rest_from_smplx
from ...core.motion.hands import solve_take_hands
from .mp import load as load_mediapipe

log = logging.getLogger(__name__)

SIDES = ("left", "right")
# mediapipe Pose landmarks: wrist, elbow, index, pinky per side
POSE_HAND = {"left": (15, 13, 19, 17), "right": (16, 14, 20, 18)}
PARTIAL = np.array([0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18])
MIN_WRIST_VISIBILITY = 0.3
ACQUIRE_SCALES = (3.5, 5.0)   # region side in units of wrist -> knuckles (pose)
ACQUIRE_SHIFT = 0.7           # region centre: wrist + shift * (knuckles - wrist)
RETRY_EVERY = 3               # frames between acquisition attempts while a hand is missed
HAND_EXTRAS = ("hand_world", "hand_image", "hand_score")
DEFAULT_COMPLEXITY = 1
_GRAPH_LOCK = threading.Lock()

_NODE = """
node {
  calculator: "HandLandmarkCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi_%(s)s"
  output_stream: "LANDMARKS:landmarks_%(s)s"
  output_stream: "WORLD_LANDMARKS:world_%(s)s"
  input_side_packet: "MODEL_COMPLEXITY:model_complexity"
}
"""


def _graph_config():
    head = ['input_stream: "image"', 'input_stream: "roi_h"', 'output_stream: "landmarks_h"',
            'output_stream: "world_h"', 'input_side_packet: "model_complexity"']
    return "\n".join(head) + _NODE % {"s": "h"}


def landmarks_to_roi(image_xyz):
    """mediapipe's hand landmarks -> next region rule, in pixels: returns
    (centre (2,), side, rotation)."""
    p = np.asarray(image_xyz, np.float64)[PARTIAL, :2]
    x0 = p[0]
    x1 = 0.5 * (0.5 * (p[4] + p[8]) + p[6])  # index/ring knuckles, then middle
    rot = np.pi / 2 - np.arctan2(-(x1[1] - x0[1]), x1[0] - x0[0])
    rot = (rot + np.pi) % (2 * np.pi) - np.pi
    lo, hi = p.min(0), p.max(0)
    centre = 0.5 * (lo + hi)
    c, s = np.cos(-rot), np.sin(-rot)
    d = p - centre
    proj = np.stack([d[:, 0] * c - d[:, 1] * s, d[:, 0] * s + d[:, 1] * c], -1)
    plo, phi = proj.min(0), proj.max(0)
    pc = 0.5 * (plo + phi)
    c, s = np.cos(rot), np.sin(rot)
    centre = centre + np.array([pc[0] * c - pc[1] * s, pc[0] * s + pc[1] * c])
    w, h = phi - plo
    shift = -0.1 * h
    centre = centre + np.array([-shift * s, shift * c])
    return centre, 2.0 * max(w, h), rot


def pose_to_roi(wrist, knuckles, scale):
    """Region around the hand from the pose: wrist and the knuckles' midpoint."""
    v = np.asarray(knuckles, np.float64) - np.asarray(wrist, np.float64)
    length = max(float(np.linalg.norm(v)), 1.0)
    rot = np.pi / 2 - np.arctan2(-v[1], v[0])
    rot = (rot + np.pi) % (2 * np.pi) - np.pi
    return np.asarray(wrist, np.float64) + ACQUIRE_SHIFT * v, scale * length, rot


class HandTracker:
    """Both hands of one person. ``__call__(index, rgb, image_xy, visibility)``
    with that person's pose landmarks (33, 2) pixels and (33,) -> dict of
    ``hand_image`` (2, 21, 3), ``hand_world`` (2, 21, 3), ``hand_score`` (2,)."""

    def __init__(self, width, height, complexity=DEFAULT_COMPLEXITY, chunk=None):
        try:
            mp = load_mediapipe()
            from mediapipe.framework.formats import rect_pb2
            from mediapipe.python._framework_bindings import resource_util
        except ImportError as exc:
            raise RuntimeError("mediapipe is not installed in the worker environment") from exc
        if complexity not in (0, 1):
            raise ValueError("hand model complexity must be 0 (lite) or 1 (full)")
        self._mp, self._rect = mp, rect_pb2.NormalizedRect
        with _GRAPH_LOCK:
            resource_util.set_resource_dir(os.path.dirname(os.path.dirname(mp.__file__)))
        self.width, self.height = width, height
        self.complexity = complexity
        if chunk is None:
            from ..detect.tracking import CHUNK as chunk
        self.chunk = chunk
        self._graphs = {}
        self._out = {side: {} for side in SIDES}
        self._ts = 0
        self._prev = {s: None for s in SIDES}
        self._missed = {s: 0 for s in SIDES}
        self.calls = 0

    def _graph(self, side):
        graph = self._graphs.get(side)
        if graph is None:
            mp, out = self._mp, self._out[side]
            graph = mp.CalculatorGraph(graph_config=_graph_config())
            for k in ("landmarks_h", "world_h"):
                graph.observe_output_stream(
                    k, lambda name, pkt: out.__setitem__(name, mp.packet_getter.get_proto(pkt)))
            graph.start_run({"model_complexity": mp.packet_creator.create_int(self.complexity)})
            self._graphs[side] = graph
        return graph

    def close(self):
        for graph in self._graphs.values():
            try:
                graph.close()
            except Exception:  # noqa: BLE001 - closing a broken graph
                pass
        self._graphs = {}

    def reset(self):
        self._prev = {s: None for s in SIDES}
        self._missed = {s: 0 for s in SIDES}

    def _run(self, frame_packet, rois):
        """One step: the landmark model of each side in rois {side: (centre,
        size, rotation)}, both at once; -> {side: (image, world) | None}."""
        mp = self._mp
        ts = self._ts
        self._ts += 1
        for side, ((cx, cy), size, rot) in rois.items():
            self._out[side].clear()
            graph = self._graph(side)
            rect = self._rect(x_center=cx / self.width, y_center=cy / self.height,
                              width=size / self.width, height=size / self.height, rotation=rot)
            graph.add_packet_to_input_stream("image", frame_packet.at(ts))
            graph.add_packet_to_input_stream("roi_h", mp.packet_creator.create_proto(rect).at(ts))
        res = {}
        for side in rois:
            self._graphs[side].wait_until_idle()
            self.calls += 1
            out = self._out[side]
            if "landmarks_h" not in out:
                res[side] = None
                continue
            lm, wl = out["landmarks_h"].landmark, out["world_h"].landmark
            image = np.array([[p.x * self.width, p.y * self.height, p.z * self.width] for p in lm])
            world = np.array([[p.x, p.y, p.z] for p in wl])
            res[side] = (image, world)
        return res

    def _accept(self, side, found, pose):
        """Confidence 0..1 of a landmark result for this side's pose wrist."""
        if found is None:
            return 0.0
        image = found[0]
        wrist, knuckles, forearm, vis = pose
        hand = max(np.linalg.norm(knuckles - wrist), 1.0)
        gate = max(1.5 * hand, 0.35 * forearm, 8.0)
        dist = np.linalg.norm(image[0, :2] - wrist)
        size = np.linalg.norm(image[9, :2] - image[0, :2])
        if dist > gate or not (hand / 4.0 <= size <= hand * 4.0):
            return 0.0
        if not (np.all(np.isfinite(image)) and np.all(np.isfinite(found[1]))):
            return 0.0
        return float(np.clip(vis, 0, 1) * (1.0 - 0.5 * (dist / gate) ** 2))

    def __call__(self, index, rgb, image_xy, visibility):
        empty = {"hand_image": np.zeros((2, 21, 3)), "hand_world": np.zeros((2, 21, 3)),
                 "hand_score": np.zeros(2)}
        if index % self.chunk == 0:
            self.reset()
        if image_xy is None:
            self.reset()
            return empty
        image_xy = np.asarray(image_xy, np.float64)
        visibility = np.asarray(visibility, np.float64)
        poses = {}
        for side in SIDES:
            wr, el, idx, pk = POSE_HAND[side]
            if visibility[wr] < MIN_WRIST_VISIBILITY:
                self._prev[side] = None
                self._missed[side] = 0
                continue
            knuckles = 0.5 * (image_xy[idx] + image_xy[pk])
            poses[side] = (image_xy[wr], knuckles, np.linalg.norm(image_xy[wr] - image_xy[el]),
                           visibility[wr])
        if not poses:
            return empty
        rois, acquiring = {}, {}
        for side, pose in poses.items():
            prev = self._prev[side]
            if prev is not None and np.linalg.norm(prev[1][0] - pose[0]) <= max(
                    2.0 * np.linalg.norm(pose[1] - pose[0]), 0.5 * pose[2], 12.0):
                rois[side] = prev[0]
            elif self._missed[side] % RETRY_EVERY == 0:
                attempt = self._missed[side] // RETRY_EVERY
                rois[side] = pose_to_roi(pose[0], pose[1],
                                         ACQUIRE_SCALES[attempt % len(ACQUIRE_SCALES)])
                acquiring[side] = True
        if not rois:
            for side in poses:
                self._missed[side] += 1
            return empty
        packet = self._mp.packet_creator.create_image_frame(
            image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        found = self._run(packet, rois)
        refine = {side: landmarks_to_roi(found[side][0]) for side in acquiring
                  if found[side] is not None}
        if refine:  # a new hand: once more on the region its own landmarks give
            again = self._run(packet, refine)
            for side, res in again.items():
                if res is not None:
                    found[side] = res
        scores = {s: self._accept(s, found.get(s), poses[s]) if s in poses else 0.0
                  for s in SIDES}
        if scores["left"] > 0 and scores["right"] > 0:
            a, b = found["left"][0], found["right"][0]
            size = max(np.linalg.norm(a[9, :2] - a[0, :2]), 1.0)
            if np.linalg.norm(a[0, :2] - b[0, :2]) < 0.5 * size:  # one hand, two claims
                da = np.linalg.norm(a[0, :2] - poses["left"][0])
                db = np.linalg.norm(b[0, :2] - poses["right"][0])
                scores["right" if da <= db else "left"] = 0.0
        for side in poses:
            self._missed[side] = 0 if scores[side] > 0 else self._missed[side] + 1
        out = empty
        for k, side in enumerate(SIDES):
            if scores[side] > 0:
                image, world = found[side]
                out["hand_image"][k], out["hand_world"][k] = image, world
                out["hand_score"][k] = scores[side]
                self._prev[side] = (landmarks_to_roi(image), image[:, :2])
            else:
                self._prev[side] = None
        return out


# --- the solve ------------------------------------------------------------------------

def rest_hands(body_model=None, betas=None):
    """{side: (20, 3)} rest hands: an SMPL-X model's own (joints from its
    J_regressor, tips from its fingertip vertices, for the take's shape) or
    the average hand for SMPL models and none."""
    regressor = getattr(body_model, "J_regressor", None)
    if regressor is not None and np.shape(regressor)[0] == 55:
        try:
            from ...core.body.model import shaped_vertices
            b = np.zeros(10) if betas is None else np.asarray(betas, np.float64)
            verts = shaped_vertices(body_model, b[:body_model.num_betas])
            joints = np.asarray(regressor) @ verts
            return {s: hand_rest_from_smplx(joints, verts, s) for s in SIDES}
        except (ValueError, AttributeError, IndexError) as exc:
            log.warning("cannot read the SMPL-X rest hand (%s): using the average hand", exc)
    return {s: average_hand_rest(s) for s in SIDES}


def add_hands(fields, cols, valid, time_s, fps, body_model=None, rest29=None):
    """Finger rotations for a take from the per-frame hand landmarks in
    `cols` (N, 2, 21, 3) ``hand_world`` and (N, 2) ``hand_score``; returns
    the fields with ``hand_rotmats``, ``hand_confidence`` and the refined
    elbows, wrists and SMPL hand joints."""
    rest = np.asarray(rest29 if rest29 is not None else average_rest_joints_29(), np.float64)
    forearm = {"left": rest[20] - rest[18], "right": rest[21] - rest[19]}
    betas = None
    if body_model is not None and "betas" in fields and np.any(valid):
        betas = np.median(np.asarray(fields["betas"])[np.asarray(valid, bool)], axis=0)
    scores = np.where(np.asarray(valid, bool)[:, None], cols["hand_score"], 0.0)
    out = solve_take_hands(fields["rotmats"], cols["hand_world"], scores, time_s, fps,
                           rest_hands(body_model, betas), forearm)
    fields = dict(fields)
    fields.update(out)
    return fields


def hand_extras(cols):
    """The raw per-frame hand data kept in the result (x_ keys), for resume."""
    return {k: np.asarray(cols[k], np.float32) for k in HAND_EXTRAS}
