import sys

from .cli import main

code = main()
if len(sys.argv) > 1 and sys.argv[1] == "capture":
    # The result is written: skip the interpreter's teardown, whose native
    # destructors (torch, mediapipe, OpenCV) took ~0.5 s of a 12 s capture.
    # The exit handlers still run (logging is flushed there) and so do the
    # stream flushes; only module clean-up and C++ static destructors are left out.
    import atexit
    import os
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(code or 0)
sys.exit(code)
