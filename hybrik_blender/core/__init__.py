"""numpy-only core of hybrik-blender.

Everything here runs both inside Blender's bundled Python and in the worker
process, so it imports numpy and the standard library only (never bpy, torch or
scipy).
"""
