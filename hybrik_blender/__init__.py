"""hybrik-blender: markerless motion capture into Blender with HybrIK.

As a Blender extension this package's register()/unregister() install the
add-on (hybrik_blender/blender). Outside Blender the same package provides
the numpy core (hybrik_blender/core), the torch worker (hybrik_blender/worker)
and the command line (``python -m hybrik_blender``). Nothing heavy is
imported here.
"""

__version__ = "0.1.0"


def register():
    from .blender import addon
    addon.register()


def unregister():
    from .blender import addon
    addon.unregister()
