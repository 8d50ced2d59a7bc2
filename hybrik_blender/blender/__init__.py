"""bpy-only layer: scene building, keyframing, operators and UI.

Never imports torch or the worker; talks to the worker through result files.
"""
