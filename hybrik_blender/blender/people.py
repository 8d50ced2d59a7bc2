"""Several people from one result: one character each, on one camera.

``import_people`` builds a character per chosen track (``Person 1`` for track
0, ``Person 2`` for track 1, ...), each with its own shape, and one camera
for all of them. The first chosen person with the most valid frames is the
reference: its camera pose (with clean-up: its floor) places everybody, so
each character overlays its own person on the video through the shared
camera. The scene's frame range covers all of them.

``person_summaries`` gives what the panel lists per track; ``thumbnail_icon``
turns a track's thumbnail (``track_thumbnails`` in the file) into a preview
icon.
"""
import bpy
import numpy as np

from ..core.formats.result import ResultFormatError
from .animation import import_result, set_scene_timing
from .camera import build_camera

_PREVIEWS = {}


def person_name(track_id):
    return f"Person {int(track_id) + 1}"


def person_summaries(takes):
    """Per take: id, name, first/last frame, frames with the person, mean confidence."""
    out = []
    for t in takes:
        valid = np.asarray(t.valid, bool)
        out.append({"id": int(t.track_id), "name": person_name(t.track_id),
                    "first": int(t.frame_index[0]) if t.num_frames else 0,
                    "last": int(t.frame_index[-1]) if t.num_frames else 0,
                    "frames": int(valid.sum()),
                    "confidence": float(np.mean(t.confidence[valid])) if valid.any() else 0.0})
    return out


def import_people(takes, model, ids=None, *, video_path=None, frame_offset=1, **kw):
    """Import the takes whose ids are in `ids` (all by default); returns the
    ImportedTake per person, in id order. Keyword arguments go to
    animation.import_result (per_frame_betas, pose_correctives, cleanup)."""
    chosen = [t for t in takes if ids is None or t.track_id in set(int(i) for i in ids)]
    chosen = [t for t in chosen if np.asarray(t.valid).any()]
    if not chosen:
        raise ResultFormatError("none of the chosen people has a frame with a person in it")
    ref = max(chosen, key=lambda t: (int(np.count_nonzero(t.valid)), -t.track_id))
    ref_take = import_result(ref, model, name=person_name(ref.track_id), camera=False,
                             set_scene=False, frame_offset=frame_offset, **kw)
    world = ref_take.rig.get("hybrik_camera_to_world")
    world = None if world is None else np.array(world, np.float64).reshape(4, 4)
    out = {ref.track_id: ref_take}
    for t in chosen:
        if t.track_id == ref.track_id:
            continue
        out[t.track_id] = import_result(t, model, name=person_name(t.track_id), camera=False,
                                        set_scene=False, frame_offset=frame_offset,
                                        camera_to_world=world, **kw)
    for tid, take in out.items():
        take.rig["hybrik_person"] = int(tid)
    start = min(t.frame_start for t in out.values())
    end = max(t.frame_end for t in out.values())
    set_scene_timing(bpy.context.scene, ref.fps, start, end)
    cam = build_camera(ref, "People_camera", world, video_path, None, True)
    takes_out = [out[k] for k in sorted(out)]
    for take in takes_out:
        take.camera = cam
    return takes_out


def thumbnail_preview(key):
    """The preview made by thumbnail_icon for `key`, or None."""
    coll = _PREVIEWS.get("people")
    return coll.get(key) if coll is not None else None


def thumbnail_icon(key, pixels):
    """A preview icon id for an (h, w, 3) uint8 thumbnail (Blender gives
    previews no icon id without a UI: 0 in background mode)."""
    try:
        import bpy.utils.previews
    except ImportError:
        return 0
    coll = _PREVIEWS.get("people")
    if coll is None:
        coll = _PREVIEWS["people"] = bpy.utils.previews.new()
    prev = coll.get(key) or coll.new(key)
    h, w = pixels.shape[:2]
    rgba = np.ones((h, w, 4), np.float32)
    rgba[..., :3] = np.asarray(pixels, np.float32) / 255.0
    prev.image_size = (w, h)
    prev.image_pixels_float.foreach_set(rgba[::-1].ravel())   # Blender's rows go up
    return prev.icon_id


def clear_icons():
    coll = _PREVIEWS.pop("people", None)
    if coll is not None:
        import bpy.utils.previews
        bpy.utils.previews.remove(coll)


def export_fbx_all(path, rigs, preset='GENERIC', with_meshes=True):
    """Every character (rig + meshes) and its action in one FBX file."""
    import os
    from . import export
    if preset == 'UNREAL':
        raise export.ExportError("one FBX for all people supports the generic and Unity "
                                 "presets; export Unreal files per person")
    for rig in rigs:
        export._check(rig, path)
    ranges = [export.action_frame_range(r) for r in rigs]
    frame_range = (min(a for a, _ in ranges), max(b for _, b in ranges))
    objects = [o for r in rigs for o in [r] + (export._meshes_of(r) if with_meshes else [])]
    with export._written(path) as tmp:
        opts = export._fbx_common(tmp, frame_range)
        opts.update(apply_scale_options='FBX_SCALE_ALL' if preset == 'UNITY'
                    else 'FBX_SCALE_NONE', apply_unit_scale=True)
        with export._export_context(objects, frame_range):
            bpy.ops.export_scene.fbx(**opts)
    return os.path.abspath(path)


def person_path(path, track_id):
    """take.fbx -> take_person2.fbx: the file of one person."""
    import os
    stem, ext = os.path.splitext(path)
    return f"{stem}_person{int(track_id)}{ext}"
