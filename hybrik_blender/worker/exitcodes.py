"""The exit codes (defined in core.exitcodes, shared with the Blender-side
commands; no dependencies, so ``check`` runs in a bare Python)."""
from ..core.exitcodes import *  # noqa: F401,F403
from ..core.exitcodes import MEANINGS, describe  # noqa: F401
