"""Follow several people through a clip, each with an identity of its own.

Per frame (``MultiPersonTracker.__call__``):

1. Every track's Kalman filter predicts its box; its own mediapipe
   landmarker (one per track, fed a crop around the predicted box) finds the
   landmarks. A landmark box far from the prediction (the landmarker jumped
   to somebody else) or one that two tracks share (both landmarkers on the
   same person after a crossing: the track that predicted it worse lets go)
   counts as a loss.
2. The person detector (detector.py) runs every ``detect_every`` frames,
   on the frame a track is lost, on every frame while a track has been
   missing for less than ``recent_s`` seconds, and while two people's boxes
   overlap (a crossing); when the reason is known before the landmarks,
   it runs beside them. Detections are assigned to
   tracks by the Hungarian algorithm on box overlap, landmark agreement and
   motion (association.py); a track whose landmarker failed but whose person
   the detector still sees is given a fresh landmarker on that box.
3. A detection that no track takes gets a landmarker of its own; when its
   landmarks land on a body a track already follows (a person mostly hidden
   behind another), it is dropped. The others are offered to the lost
   tracks, all at once (Hungarian): the same torso colour histogram
   (reid.py) near where the track was last seen or was heading (its velocity
   over its last second, for at most a second, held inside the frame; the
   radius grows with the gap up to 1.5 box sizes), or after
   ``accept_anywhere_s`` anywhere, with a stricter appearance test and only
   where no near track fits. Otherwise it starts a new track, while fewer
   than ``max_people`` are active.
4. Tracks seen this frame are reported; a track missing for more than
   ``lost_after`` frames stops its landmarker and waits for re-identification.
5. Once a landmark graph has closed, the heap is trimmed every
   ``heap.EVERY`` frames (worker/heap.py), so the resident size stays flat.

Identities are stable across ``--resume``: at every ``CHUNK`` boundary the
tracker forgets everything except, per track, its last box, the frame it
was last seen and the boxes and torso histograms of its last frames, which
are what the result file stores (``bbox``, ``x_appearance``); the state
after a boundary is rebuilt from those alone, so a resumed run reproduces
an uninterrupted one.
"""
import collections
import concurrent.futures
import dataclasses
import logging
import os

import cv2
import numpy as np

from .. import heap
from ..landmarks.mp import load as load_mediapipe
from .association import INFEASIBLE, hungarian, track_detection_cost
from .detector import box_iou
from .kalman import BoxKalman
from .reid import SIZE as APPEARANCE_SIZE, appearance_distance, torso_histogram
from .threads import SingleThreaded
from .tracking import CHUNK, Detection, landmark_box

log = logging.getLogger(__name__)
MAX_PEOPLE_ALL = 32
HISTORY = 10                      # torso histograms kept per track
THUMB_H, THUMB_W = 128, 96
SAME_BODY = 0.12                  # landmark_distance of two views of one body


@dataclasses.dataclass
class TrackMemory:
    """What a track leaves for the next chunk (and a resumed run): its last
    box and frame, the torso histograms and (frame, box) of its last seen
    frames (``trail``, for the velocity it left with)."""
    track_id: int
    last_box: np.ndarray
    last_seen: int
    hists: list
    trail: list = dataclasses.field(default_factory=list)

    def appearance(self):
        return np.mean(self.hists, 0) if self.hists else np.zeros(APPEARANCE_SIZE, np.float32)

    def seen(self, index, box, hist):
        self.last_box = np.asarray(box, np.float32)
        self.last_seen = int(index)
        self.trail = (self.trail + [(self.last_seen, self.last_box)])[-HISTORY:]
        if np.any(hist):   # zeros: the person was overlapped, no appearance
            self.hists = (self.hists + [np.asarray(hist, np.float32)])[-HISTORY:]

    def velocity(self, fps):
        """Box centre velocity (px per frame) over the trail's last second."""
        pts = [(i, (b[:2] + b[2:]) / 2) for i, b in self.trail if self.last_seen - i < fps]
        if len(pts) < 3:
            return np.zeros(2)
        t = np.array([i for i, _ in pts], np.float64)
        c = np.array([p for _, p in pts], np.float64)
        t -= t.mean()
        return (t[:, None] * (c - c.mean(0))).sum(0) / max((t * t).sum(), 1e-9)

    def predicted_centre(self, index, fps, width, height):
        """Where the person would be at frame `index`, walking on as it went
        for at most a second, held inside the frame (a person who left through
        an edge comes back through it)."""
        c = (self.last_box[:2].astype(np.float64) + self.last_box[2:]) / 2
        c = c + self.velocity(fps) * min(index - self.last_seen, fps)
        return np.clip(c, 0, [width, height])


def memories_from_rows(track_ids, frame_index, valid, bbox, appearance, before):
    """TrackMemory per track from result rows (those with frame < `before`)."""
    out = {}
    order = np.lexsort((frame_index, track_ids))
    for i in order:
        if not valid[i] or frame_index[i] >= before:
            continue
        tid = int(track_ids[i])
        m = out.get(tid)
        if m is None:
            m = out[tid] = TrackMemory(tid, None, -1, [])
        m.seen(frame_index[i], bbox[i], appearance[i])
    return out


def thumbnail(rgb, box):
    """The box's crop, letterboxed into THUMB_H x THUMB_W (uint8)."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    x0, x1 = int(np.clip(x0, 0, w - 1)), int(np.clip(np.ceil(x1), 1, w))
    y0, y1 = int(np.clip(y0, 0, h - 1)), int(np.clip(np.ceil(y1), 1, h))
    crop = rgb[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    s = min(THUMB_H / crop.shape[0], THUMB_W / crop.shape[1])
    ch, cw = max(1, int(round(crop.shape[0] * s))), max(1, int(round(crop.shape[1] * s)))
    small = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA)
    out = np.zeros((THUMB_H, THUMB_W, 3), np.uint8)
    oy, ox = (THUMB_H - ch) // 2, (THUMB_W - cw) // 2
    out[oy:oy + ch, ox:ox + cw] = small
    return out


class CropLandmarker:
    """One person's mediapipe Pose, fed a square crop around that person."""

    CROP = 256

    def __init__(self, pose_cls, confidence, on_close=None):
        self._cls, self._conf = pose_cls, confidence
        self._on_close = on_close
        self.pose = None

    def reset(self):
        if self.pose is not None:
            self.pose.close()
            self.pose = None
            if self._on_close is not None:
                self._on_close()

    def __call__(self, rgb, box, width, height, keep=0.25):
        """Landmarks of the person in `box`; the crop shows only the box grown
        by `keep` of its size on each side (others nearby are blanked out, so
        the landmarker cannot take them instead)."""
        if self.pose is None:
            self.pose = self._cls(static_image_mode=False, model_complexity=1,
                                  smooth_landmarks=False, enable_segmentation=False,
                                  min_detection_confidence=self._conf,
                                  min_tracking_confidence=self._conf)
        x0, y0, x1, y1 = (float(v) for v in box)
        side = max(1.5 * max(x1 - x0, y1 - y0), 32.0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        s = self.CROP / side
        m = np.array([[s, 0, -(cx - side / 2) * s], [0, s, -(cy - side / 2) * s]])
        crop = cv2.warpAffine(rgb, m, (self.CROP, self.CROP), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        gx, gy = keep * (x1 - x0), keep * (y1 - y0)
        lo = np.floor(((np.array([x0 - gx, y0 - gy]) - [cx - side / 2, cy - side / 2]) * s))
        hi = np.ceil(((np.array([x1 + gx, y1 + gy]) - [cx - side / 2, cy - side / 2]) * s))
        lo = np.clip(lo, 0, self.CROP).astype(int)
        hi = np.clip(hi, 0, self.CROP).astype(int)
        blank = np.ones((self.CROP, self.CROP), bool)
        blank[lo[1]:hi[1], lo[0]:hi[0]] = False
        crop[blank] = 0
        res = self.pose.process(crop)
        if res.pose_landmarks is None or res.pose_world_landmarks is None:
            return None
        lm = res.pose_landmarks.landmark
        uv = np.array([[p.x, p.y] for p in lm])
        image_xy = np.stack([cx - side / 2 + uv[:, 0] * side, cy - side / 2 + uv[:, 1] * side], 1)
        visibility = np.array([p.visibility for p in lm])
        world = np.array([[p.x, p.y, p.z] for p in res.pose_world_landmarks.landmark])
        lbox = landmark_box(image_xy, visibility, width, height)
        score = float(np.clip(np.mean(np.sort(visibility)[-17:]), 0, 1))
        return Detection(image_xy, visibility, world, lbox, score)


def landmark_distance(a, b):
    """Median distance between the landmarks that both Detections see, in
    units of the larger box's height (inf when they share too few)."""
    both = (a.visibility > 0.5) & (b.visibility > 0.5)
    if both.sum() < 4:
        return np.inf
    h = max(a.box[3] - a.box[1], b.box[3] - b.box[1], 1.0)
    return float(np.median(np.linalg.norm(a.image_xy[both] - b.image_xy[both], axis=1)) / h)


class _Track:
    def __init__(self, track_id, box, landmarker, missing=0):
        self.id = track_id
        self.kf = BoxKalman(box)
        self.landmarker = landmarker
        self.missing = missing
        self.current = None
        # the detector's box relative to the landmarks' box, in units of the
        # latter's size: landmarks guess at limbs outside the frame or behind
        # somebody, the detector's box is the visible person
        self.offset = np.zeros(4)

    def corrected(self, det):
        """`det` with its box mapped by the learnt landmark -> detector offset."""
        b = det.box
        size = np.array([b[2] - b[0], b[3] - b[1]] * 2)
        return dataclasses.replace(det, box=b + self.offset * size)

    def learn(self, raw_box, det_box, rate=0.5):
        b = raw_box
        size = np.maximum(np.array([b[2] - b[0], b[3] - b[1]] * 2), 1.0)
        self.offset += rate * ((np.asarray(det_box) - b) / size - self.offset)


def _consistent(box, reference, min_iou=0.2, max_distance=0.3):
    """The landmarks' box can be the person of `reference`: they overlap, or
    their centres lie within `max_distance` of the reference's height."""
    iou = box_iou(box, reference)[0, 0]
    c = (np.asarray(box[:2]) + box[2:]) / 2 - (np.asarray(reference[:2]) + reference[2:]) / 2
    h = max(reference[3] - reference[1], 1.0)
    return iou >= min_iou or np.linalg.norm(c) / h <= max_distance


class MultiPersonTracker:
    """``__call__(index, rgb)`` -> [(track_id, Detection, histogram)] for the
    people seen in that frame, by id. See the module docstring."""

    def __init__(self, fps, width, height, max_people=None, detect_every=5, detector=None,
                 min_confidence=0.5, new_track_score=0.4, lost_after=2, recent_s=0.5,
                 accept_anywhere_s=2.0, reid_distance=0.7, reid_anywhere_distance=0.35):
        mp = load_mediapipe()
        self._pose_cls = mp.solutions.pose.Pose
        self._conf = min_confidence
        self.fps, self.width, self.height = float(fps), width, height
        self.max_people = int(max_people) if max_people else MAX_PEOPLE_ALL
        self.detect_every = max(1, int(detect_every))
        if detector is None:
            from .detector import PersonDetector
            detector = PersonDetector()
        self.detector = detector
        self.new_track_score = new_track_score
        self.lost_after = int(lost_after)
        self.recent = max(1, int(round(recent_s * self.fps)))
        self.accept_anywhere = accept_anywhere_s * self.fps
        self.reid_distance, self.reid_anywhere = reid_distance, reid_anywhere_distance
        self.memory = {}
        self.thumbnails = {}
        self._active = None
        self.detections_run = 0
        workers = min(4, os.cpu_count() or 1)
        self._pool = (concurrent.futures.ThreadPoolExecutor(workers, "landmarks")
                      if workers > 1 else None)
        self._threads = SingleThreaded()   # from the first frame until close()
        self.heap = heap.Trimmer()         # closed graphs' memory back to the system

    # --- chunk boundaries and resume ---------------------------------------------

    def restart(self, memory, index, thumbnails=None):
        """Forget everything but `memory` (TrackMemory by id) at frame `index`."""
        self._stop_tracks()
        self.memory = {k: dataclasses.replace(v, hists=list(v.hists), trail=list(v.trail))
                       for k, v in memory.items()}
        if thumbnails is not None:
            self.thumbnails = dict(thumbnails)
        recent = sorted((m for m in self.memory.values()
                         if index - 1 - m.last_seen <= self.lost_after),
                        key=lambda m: (-m.last_seen, m.track_id))[:self.max_people]
        self._active = [_Track(m.track_id, m.last_box, self._landmarker(),
                               missing=index - 1 - m.last_seen)
                        for m in sorted(recent, key=lambda m: m.track_id)]
        self._chunk_start = index

    def _stop_tracks(self):
        for t in self._active or []:
            t.landmarker.reset()
        self._active = []

    def close(self):
        self._stop_tracks()
        self._threads.leave()

    def _landmarker(self):
        return CropLandmarker(self._pose_cls, self._conf, on_close=self.heap.closed)

    # --- one frame -------------------------------------------------------------------

    def __call__(self, index, rgb):
        self._threads.enter()
        if self._active is None or index % CHUNK == 0:
            self.restart(self.memory, index)
        preds = [t.kf.predict() for t in self._active]
        for t in self._active:
            t.from_detector = False
        # the reasons to run the detector that are known before the landmarks
        # (its schedule, a crossing of the predicted boxes, a person lost in
        # an earlier frame): it then runs beside the landmarkers, on the same
        # frame, with the same result
        active_ids = {t.id for t in self._active}
        crossing = len(preds) > 1 and (box_iou(preds, preds) - np.eye(len(preds))).max() > 0.05
        due = ((index - self._chunk_start) % self.detect_every == 0 or crossing
               or any(0 < index - m.last_seen <= self.recent and m.track_id not in active_ids
                      for m in self.memory.values()))
        early = self._pool.submit(self.detector, rgb) if due and self._pool is not None else None
        # each person has its own landmark graph, and mediapipe runs it with
        # the GIL released, so people are landmarked side by side; results
        # are the same in any order
        raws = self._map(lambda tp: tp[0].landmarker(rgb, tp[1], self.width, self.height),
                         list(zip(self._active, preds)))
        for t, pred, raw in zip(self._active, preds, raws):
            t.raw = det = raw
            if det is not None:
                det = t.corrected(det)
            if det is not None and not _consistent(det.box, pred):
                log.info("frame %d: person %d's landmarks jumped away; dropped", index, t.id)
                t.landmarker.reset()
                det = None
            t.current = det
        self._resolve_shared(index)
        lost_now = any(t.current is None and t.missing == 0 for t in self._active)
        recently_lost = any(0 < index - m.last_seen <= self.recent for m in self.memory.values()
                            if m.track_id not in {t.id for t in self._active if t.current})
        if due or lost_now or recently_lost:
            self._detect(index, rgb, early.result() if early is not None else None)
        out = []
        seen_boxes = [t.kf.box for t in self._active]
        for k, t in enumerate(list(self._active)):
            if t.current is not None:
                # the filter takes detector boxes, and landmark boxes only while
                # their size agrees with the prediction (a half-hidden person's
                # landmarks shrink or grow the box)
                box = t.current.box
                pred = t.kf.box
                ratio = ((box[2] - box[0]) * (box[3] - box[1])
                         / max((pred[2] - pred[0]) * (pred[3] - pred[1]), 1.0))
                if t.from_detector or 0.6 <= ratio <= 1.6:
                    t.kf.update(box, 0.5 if t.from_detector else 1.0)
                t.current = dataclasses.replace(t.current, box=t.kf.box)
                t.missing = 0
                # appearance only from frames where nobody overlaps the person
                others = [b for j, b in enumerate(seen_boxes) if j != k]
                if others and box_iou(t.current.box, np.array(others)).max() > 0.02:
                    hist = np.zeros(APPEARANCE_SIZE, np.float32)
                else:
                    hist = torso_histogram(rgb, t.current.box, t.current.image_xy,
                                           t.current.visibility)
                self._remember(t.id, t.current.box, index, hist)
                if t.id not in self.thumbnails and t.current.score >= 0.6:
                    self.thumbnails[t.id] = thumbnail(rgb, t.current.box)
                out.append((t.id, t.current, hist))
            else:
                t.missing += 1
                if t.missing > self.lost_after:
                    t.landmarker.reset()
                    self._active.remove(t)
        self.heap.tick(index)
        return sorted(out, key=lambda o: o[0])

    def _remember(self, tid, box, index, hist):
        m = self.memory.get(tid)
        if m is None:
            m = self.memory[tid] = TrackMemory(tid, None, -1, [])
        m.seen(index, box, hist)

    def _resolve_shared(self, index):
        """Two landmarkers on one body (after a crossing, the one behind may
        slide onto the one in front): the landmarks coincide. The track whose
        prediction fits the body worse lets go."""
        seen = [t for t in self._active if t.current is not None]
        for i, a in enumerate(seen):
            for b in seen[i + 1:]:
                if a.current is None or b.current is None:
                    continue
                if landmark_distance(a.current, b.current) < SAME_BODY:
                    da = 1 - box_iou(a.current.box, a.kf.box)[0, 0]
                    db = 1 - box_iou(b.current.box, b.kf.box)[0, 0]
                    loser = b if (db, b.id) > (da, a.id) else a
                    log.info("frame %d: persons %d and %d on one body; %d lets go",
                             index, a.id, b.id, loser.id)
                    loser.landmarker.reset()
                    loser.current = None

    def _map(self, fn, items):
        """[fn(x) for x in items], side by side in the pool when there are several."""
        if len(items) > 1 and self._pool is not None:
            return list(self._pool.map(fn, items))
        return [fn(x) for x in items]

    def _detect(self, index, rgb, found=None):
        """Match the detector's people (`found`: its output for this frame,
        when it already ran) to the tracks; start tracks for the others."""
        self.detections_run += 1
        boxes, scores = found if found is not None else self.detector(rgb)
        active = self._active
        track_boxes = [t.current.box if t.current is not None else t.kf.box for t in active]
        lms = [(t.current.image_xy, t.current.visibility) if t.current is not None else None
               for t in active]
        pairs = hungarian(track_detection_cost(track_boxes, lms, boxes))
        taken = {c for _, c in pairs}
        # lost, or its landmarks wander off the person: start afresh there
        # (the tracks that do, side by side)
        again = [(active[r], c) for r, c in pairs if active[r].current is None
                 or box_iou(active[r].current.box, boxes[c])[0, 0] < 0.5]
        for t, _ in again:
            t.current = None
            t.landmarker.reset()
        fresh = self._map(lambda tc: tc[0].landmarker(rgb, boxes[tc[1]], self.width,
                                                      self.height, keep=0.1), again)
        for (t, _), det in zip(again, fresh):
            t.raw = det
        for r, c in pairs:
            t = active[r]
            if t.current is None and (t.raw is None or not _consistent(t.raw.box, boxes[c])):
                continue
            t.learn(t.raw.box, boxes[c])
            t.current = dataclasses.replace(t.raw, box=np.asarray(boxes[c], np.float64))
            t.from_detector = True
        occupied = [t.current.box if t.current is not None else t.kf.box for t in active]
        free = [c for c in np.argsort(-scores, kind="stable") if c not in taken
                and scores[c] >= self.new_track_score
                and (not occupied or box_iou(boxes[c], np.array(occupied)).max() < 0.3)]
        self._start(index, rgb, [boxes[c] for c in free])

    def _start(self, index, rgb, boxes):
        """People nobody follows (`boxes`, best first): old tracks coming
        back, or new ones, while fewer than ``max_people`` are active. Those
        whose landmarks mediapipe finds are matched to the lost tracks all at
        once (Hungarian), so two returning people cannot take each other's
        ids by order."""
        found = []
        for box in boxes:
            if len(self._active) + len(found) >= self.max_people:
                break
            landmarker = self._landmarker()
            det = landmarker(rgb, box, self.width, self.height, keep=0.1)
            if det is None or not _consistent(det.box, box):
                log.debug("frame %d: no landmarks for the detection %s", index, np.round(box))
                landmarker.reset()
                continue
            # a person mostly hidden behind another: the landmarks land on the
            # one in front, whom somebody already follows
            taken = [t.id for t in self._active if t.current is not None
                     and landmark_distance(det, t.current) < SAME_BODY]
            taken += [None for _, other, _, _ in found if landmark_distance(det, other) < SAME_BODY]
            if taken:
                log.debug("frame %d: the detection %s lands on a body already followed (%s)",
                          index, np.round(box), taken)
                landmarker.reset()
                continue
            found.append((box, det, landmarker,
                          torso_histogram(rgb, det.box, det.image_xy, det.visibility)))
        if not found:
            return
        active = {t.id for t in self._active}
        lost = [m for m in self.memory.values()
                if m.track_id not in active and m.last_seen < index]
        cost = np.full((len(found), len(lost)), INFEASIBLE)
        for j, m in enumerate(lost):
            gap = index - m.last_seen
            size = max(m.last_box[2] - m.last_box[0], m.last_box[3] - m.last_box[1], 1.0)
            radius = size * min(0.5 + gap / self.fps, 1.5)
            # from where it was last seen or where it was heading (a velocity
            # from the boxes of a person going behind somebody can be wrong)
            centres = np.stack([(m.last_box[:2] + m.last_box[2:]) / 2,
                                m.predicted_centre(index, self.fps, self.width, self.height)])
            for i, (_, det, _, hist) in enumerate(found):
                d = appearance_distance(hist, m.appearance())
                dist = float(np.linalg.norm((det.box[:2] + det.box[2:]) / 2 - centres,
                                            axis=1).min()) / radius
                # near where it was heading: a loose appearance test (it may
                # come back half hidden); after a long gap anywhere, with a
                # strict one, and only where nobody near fits better
                near = d <= self.reid_distance and dist <= 1.0
                if near or (gap >= self.accept_anywhere and d <= self.reid_anywhere):
                    cost[i, j] = d + 0.5 * min(dist, 1.0) + (0.0 if near else 1.0)
                log.debug("frame %d: candidate %d: appearance %.2f, distance %.2f, gap %d, "
                          "near %s", index, m.track_id, d, dist, gap, near)
        back = dict(hungarian(cost)) if lost else {}
        for i, (box, det, landmarker, hist) in enumerate(found):
            if i in back:
                m = lost[back[i]]
                tid = m.track_id
                log.info("frame %d: person %d is back (appearance distance %.2f)", index, tid,
                         appearance_distance(hist, m.appearance()))
            else:
                tid = max([max(self.memory, default=-1) + 1] + [t.id + 1 for t in self._active])
            track = _Track(tid, box, landmarker)
            track.raw = det
            track.from_detector = True
            track.learn(det.box, box, rate=1.0)
            track.kf.predict()
            track.current = dataclasses.replace(det, box=np.asarray(box, np.float64))
            self._active.append(track)
        self._active.sort(key=lambda t: t.id)
