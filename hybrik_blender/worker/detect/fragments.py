"""Several people's rows after tracking: gaps filled, fragments merged.

* ``fill_gaps``: a track's rows run from its first to its last frame; the
  frames in between where it was not seen get invalid placeholder rows.
* ``merge_fragments`` (``--max-people``): when more tracks were found than
  the result may hold, tracks that never share a frame and look alike (mean
  torso histogram, reid.appearance_distance below ``max_distance``) are
  merged, the most alike pair first, the merged track keeping the smaller id;
  then the tracks with the most valid frames are kept.
"""
import numpy as np

from .reid import appearance_distance


def _placeholder_row(placeholder, index, time):
    row = dict(placeholder)
    row.update(index=int(index), time=float(time), valid=False, bbox=np.zeros(4),
               confidence=0.0)
    return row


def fill_gaps(rows, times, placeholder):
    """Rows of one track, one per frame from its first to its last, sorted."""
    rows = sorted(rows, key=lambda r: r["index"])
    if not rows:
        return rows
    size = len(np.asarray(next(r["appearance"] for r in rows if "appearance" in r)))
    base = dict(placeholder, appearance=np.zeros(size, np.float32))
    by_index = {r["index"]: r for r in rows}
    out = []
    for i in range(rows[0]["index"], rows[-1]["index"] + 1):
        if i in by_index:
            out.append(by_index[i])
        elif i in times:
            out.append(_placeholder_row(base, i, times[i]))
    return out


def _mean_appearance(rows):
    hists = [np.asarray(r["appearance"]) for r in rows if r["valid"] and np.any(r["appearance"])]
    return np.mean(hists, 0) if hists else None


def merge_fragments(tracks, max_people, placeholder, times, max_distance=0.5):
    """tracks: id -> rows (gap-filled). Returns at most `max_people` tracks."""
    tracks = {k: list(v) for k, v in tracks.items()}
    while len(tracks) > max_people:
        ids = sorted(tracks)
        best = None
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                ra, rb = tracks[a], tracks[b]
                if not (ra[-1]["index"] < rb[0]["index"] or rb[-1]["index"] < ra[0]["index"]):
                    continue   # seen at the same time: two people
                ha, hb = _mean_appearance(ra), _mean_appearance(rb)
                if ha is None or hb is None:
                    continue
                d = appearance_distance(ha, hb)
                if d <= max_distance and (best is None or d < best[0]):
                    best = (d, a, b)
        if best is None:
            break
        _, a, b = best
        tracks[a] = fill_gaps(tracks[a] + tracks.pop(b), times, placeholder)
    if len(tracks) > max_people:
        rank = sorted(tracks, key=lambda k: (-sum(r["valid"] for r in tracks[k]), k))
        tracks = {k: tracks[k] for k in sorted(rank[:max_people])}
    return tracks
