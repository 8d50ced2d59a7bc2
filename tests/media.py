"""Real media of people from Debian's opencv-doc (see scripts/fetch_test_media.sh):
found in $HYBRIK_TEST_MEDIA or .tools/media; tests that need them skip when
they are missing, unless HYBRIK_REQUIRE_MEDIA=1 (CI), where that fails."""
import os

import pytest

from tests.conftest import DATA, ROOT


def media_path(name):
    for folder in (DATA, os.environ.get("HYBRIK_TEST_MEDIA"), os.path.join(ROOT, ".tools", "media"),
                   "/usr/share/doc/opencv-doc/examples/data"):
        if folder and os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    msg = f"{name} not found: run scripts/fetch_test_media.sh"
    if os.environ.get("HYBRIK_REQUIRE_MEDIA") == "1":
        pytest.fail(msg)
    pytest.skip(msg)
