"""One thread for numpy's OpenBLAS and OpenCV while several people are
followed.

The tracker keeps both cores busy with its own threads (one landmark graph
per person, the person detector beside them). A numpy call that OpenBLAS
runs threaded (any LAPACK solve with several right-hand sides, such as the
4x4 inverse of each track's Kalman update) wakes OpenBLAS's worker threads,
which then spin on ``sched_yield`` for a while before they sleep; OpenCV's
pool does the same after each parallel call (the detector's network). On 2
cores that spinning took about a fifth of the CPU samples of a 3-person
capture. With one thread each, both libraries compute the same values
(their threads split rows and channels, never a sum), so the tracking is
bit for bit the same; the counts are put back when the tracker closes.

OpenBLAS is reached through its C API in the library numpy ships
(``openblas_set_num_threads``, with the 64-bit-integer build's suffix);
where there is none (another BLAS, another platform), nothing changes.
"""
import ctypes
import glob
import os

_SUFFIXES = ("64_", "_64_", "")
_PREFIXES = ("openblas", "scipy_openblas")


def _numpy_openblas():
    """(get, set) of the OpenBLAS numpy uses, or None."""
    import numpy
    root = os.path.dirname(numpy.__file__)
    names = [p for folder in (os.path.join(root, os.pardir, "numpy.libs"),
                              os.path.join(root, ".dylibs"), os.path.join(root, "core"))
             for p in glob.glob(os.path.join(folder, "*openblas*"))]
    for path in names:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype, put.restype = ctypes.c_int, None
                    put.argtypes = [ctypes.c_int]
                    return get, put
    return None


class SingleThreaded:
    """``enter()`` gives OpenBLAS (numpy's) and OpenCV one thread each;
    ``leave()`` puts back what they had. Both may be called repeatedly."""

    def __init__(self):
        self._saved = None

    def enter(self):
        if self._saved is not None:
            return
        import cv2
        blas = _numpy_openblas()
        self._saved = (cv2.getNumThreads(), blas, blas[0]() if blas else None)
        cv2.setNumThreads(1)
        if blas:
            blas[1](1)

    def leave(self):
        if self._saved is None:
            return
        import cv2
        cv_threads, blas, blas_threads = self._saved
        self._saved = None
        cv2.setNumThreads(cv_threads)
        if blas and blas_threads:
            blas[1](blas_threads)
