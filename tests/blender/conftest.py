"""Blender-side tests run in the real `bpy` module (no mocks).

bpy's own shutdown is unreliable: 4.2.x segfaults at interpreter exit after
a glTF export (rc 139), and 4.5.x can deadlock in a C++ global destructor
(its delayed-close thread) once a movie clip was loaded. So once pytest has
finished reporting, the process leaves through os._exit with pytest's own
exit status, on every Blender version.
"""
import os
import sys

import pytest

bpy = pytest.importorskip("bpy")

_exit = {}


def pytest_sessionfinish(session, exitstatus):
    _exit["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if "status" in _exit:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit["status"])


@pytest.fixture
def empty_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene
