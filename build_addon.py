"""Build the installable Blender extension zip.

    python build_addon.py [--out dist/]

The zip holds blender_manifest.toml at its root and the hybrik_blender
package (core, worker and blender layers) beside it; no tests, caches,
virtual environments or build leftovers.
"""
import argparse
import os
import re
import sys
import zipfile

ROOT = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "hybrik_blender"
MANIFEST = os.path.join(ROOT, "addon_manifest", "blender_manifest.toml")
SKIP_DIRS = {"__pycache__", ".pytest_cache", "tests"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".blend1")


def manifest_version():
    text = open(MANIFEST, encoding="utf-8").read()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def package_files():
    base = os.path.join(ROOT, PACKAGE)
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(SKIP_SUFFIXES) and not name.startswith("."):
                full = os.path.join(folder, name)
                yield full, os.path.relpath(full, base)


def build(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{PACKAGE}-{manifest_version()}.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(MANIFEST, "blender_manifest.toml")
        for full, rel in package_files():
            zf.write(full, rel)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "dist"))
    print(build(ap.parse_args(argv).out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
