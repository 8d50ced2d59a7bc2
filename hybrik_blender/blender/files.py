"""Writing Blender's own files safely (see core.safe_paths): a .blend is
saved under a temporary name beside it and renamed into place, and the add-on
refuses to write an export over a file the open scene reads."""
import os

import bpy

from ..core.safe_paths import atomic_output, check_outputs


def save_blend(path, label="-o"):
    """Save the current data as `path` atomically. ``copy=True`` leaves the
    session's own file name alone; the temporary file is in the same folder,
    so relative paths are remapped exactly as for `path`. Returns the path."""
    with atomic_output(path, label) as tmp:
        bpy.ops.wm.save_as_mainfile(filepath=tmp, check_existing=False, copy=True)
    return os.path.abspath(path)


def scene_inputs():
    """(label, path) of the files the open session reads: the .blend itself,
    its libraries, movie clips, images and sounds."""
    out = []
    if bpy.data.filepath:
        out.append(("open .blend file", bpy.data.filepath))
    for label, coll in (("library", bpy.data.libraries), ("movie clip", bpy.data.movieclips),
                        ("image", bpy.data.images), ("sound", bpy.data.sounds)):
        for item in coll:
            path = getattr(item, "filepath", "")
            if path and not getattr(item, "packed_file", None):
                out.append((label, bpy.path.abspath(path, library=getattr(item, "library",
                                                                          None))))
    return out


def check_export_path(path, label="export"):
    """Raise core.safe_paths.PathRefused for an export path the scene reads
    or that is not a regular file, or whose folder cannot be written."""
    check_outputs([(label, path)], scene_inputs())
