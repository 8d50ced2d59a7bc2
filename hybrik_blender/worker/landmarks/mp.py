"""``import mediapipe``, quiet and without its plotting start-up cost.

``mediapipe.solutions`` imports its drawing helpers, and they import
``matplotlib.pyplot`` at module level: about 0.25-0.4 s of every worker start
(60% of mediapipe's import), for plots that the worker never draws. While
mediapipe imports, ``matplotlib`` and ``matplotlib.pyplot`` are lazy stand-ins
that import the real module on their first attribute access, so mediapipe's
own drawing functions still work if something calls them. Where matplotlib is
already loaded nothing is replaced.
"""
import importlib
import os
import sys
import threading
import types

_LOCK = threading.RLock()   # re-entered if the import itself touches a stand-in
_LAZY = ("matplotlib", "matplotlib.pyplot")


class _Lazy(types.ModuleType):
    """A module that imports the real one (by its name) on first use."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        real = sys.modules.get(self.__name__)
        if real is None or isinstance(real, _Lazy):
            with _LOCK:
                for key in _LAZY:
                    if isinstance(sys.modules.get(key), _Lazy):
                        del sys.modules[key]
                real = importlib.import_module(self.__name__)
        return getattr(real, name)


def quiet():
    """mediapipe's C++ logging down to errors (set before it loads)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load():
    """The ``mediapipe`` module (ImportError where it is not installed)."""
    quiet()
    if "mediapipe" in sys.modules:
        return sys.modules["mediapipe"]
    with _LOCK:
        placed = []
        if not any(k in sys.modules for k in _LAZY):
            for key in _LAZY:
                sys.modules[key] = _Lazy(key)
                placed.append(key)
            sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
        try:
            import mediapipe
        finally:
            for key in placed:  # a later real import finds nothing in its way
                if isinstance(sys.modules.get(key), _Lazy):
                    del sys.modules[key]
    return mediapipe
