"""The worker's heap: glibc settings at start (:func:`tune`), and the
landmark graphs' freed memory given back while several people are followed
(:class:`Trimmer`).

:func:`tune`, called once when the worker command starts (before its
threads): at most 2 malloc arenas, allocations under 32 MiB from the heap
instead of their own mmap (a 640x480 frame, a crop, an interpreter's buffers
are then not mapped, zeroed by the kernel and unmapped again each time), and
the heap top trimmed only past 128 MiB free. Measured with the benchmark
(`scripts/bench_capture.py --multi-only --multi-frames 150`, two interleaved
runs each, with the trimming below in both): 3 people 12.1, 12.5 -> 12.8,
13.3 fps end to end, --people 1 25.1, 27.0 -> 26.9, 27.9 fps, and a lower
peak RSS (3 people 820-856 -> 792-824 MiB, one person 608-645 -> 613 MiB).
The values computed do not depend on the allocator.

Every track owns a mediapipe graph, and graphs come and go: a person lost,
landmarks on the wrong body, a fresh start on a detector box, every chunk
boundary. Each graph allocates its TFLite interpreter and the float32
copies of the fp16 weights (tens of MiB) from the threads that run it. glibc
keeps what they free inside its per-thread arenas, so the resident size of a
3-person capture climbed with the clip (measured on the benchmark clip:
about 870 MiB at frame 100, 1,040 MiB at frame 350 of 600, falling back only
at random), although no Python object and no graph is left behind (a graph
made and closed 40 times stays flat). ``malloc_trim(0)`` returns the free
pages of every arena; called every ``EVERY`` frames once a graph has closed,
it held the same run at 740-800 MiB for all 600 frames, at 1-13 ms a call.

Only where the C library is glibc; elsewhere :func:`trim` does nothing.
"""
import ctypes
import ctypes.util

EVERY = 16   # frames between trims, at most


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
SETTINGS = ((M_ARENA_MAX, 2), (M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 128 << 20))


def _glibc(name, argtypes):
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = getattr(libc, name)
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


_TRIM = _glibc("malloc_trim", [ctypes.c_size_t])
_MALLOPT = _glibc("mallopt", [ctypes.c_int, ctypes.c_int])


def tune():
    """Apply SETTINGS (glibc only); the names of those that took."""
    if _MALLOPT is None or _TRIM is None:   # malloc_trim: glibc's, not another libc's mallopt
        return []
    names = {M_ARENA_MAX: "arena_max", M_MMAP_THRESHOLD: "mmap_threshold",
             M_TRIM_THRESHOLD: "trim_threshold"}
    return [names[k] for k, v in SETTINGS if _MALLOPT(k, v) == 1]


def available():
    return _TRIM is not None


def trim():
    """Return the free heap pages to the system; True where it could."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class Trimmer:
    """``closed()`` when a graph was closed; ``tick(index)`` every frame:
    trims at most every ``every`` frames, and only after a close."""

    def __init__(self, every=EVERY):
        self.every = int(every)
        self.pending = False
        self.last = None
        self.count = 0

    def closed(self):
        self.pending = True

    def tick(self, index):
        if self.pending and (self.last is None or index - self.last >= self.every):
            self.pending = False
            self.last = index
            if trim():
                self.count += 1
