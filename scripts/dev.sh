#!/usr/bin/env bash
# Set up the environments if missing, then run a command or the tests.
#
#   bash scripts/dev.sh run CMD [ARGS...]   run CMD inside .venv
#   bash scripts/dev.sh test [PYTEST ARGS]  all tests in .venv (Blender 5.0.1), then the
#                                           Blender-side tests on bpy 4.2 and 4.5 LTS
#
# .venv holds everything (bpy 5.0.1, torch CPU, mediapipe, smplx, pytest);
# .venv-bpy4.2 / .venv-bpy4.5 hold another bpy for the Blender-side tests.
# A venv is rebuilt when its requirements change. Set HYBRIK_LTS_BLENDERS=""
# to skip the LTS runs (e.g. for a quick local loop).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LTS_BLENDERS="${HYBRIK_LTS_BLENDERS-4.2.23 4.5.15}"

find_python() {
  for py in python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$py"; return
    fi
  done
  echo "error: Python 3.11 is required (bpy wheels exist for 3.11 only)" >&2
  exit 2
}

# ensure_venv DIR REQUIREMENTS_FILE [EXTRA PIP ARGS...]
ensure_venv() {
  local dir="$1" req="$2"; shift 2
  local stamp
  # every requirements file counts: main.txt includes cluster.txt with -r
  stamp="$(cat requirements/*.txt | sha1sum | cut -c1-12)-$(echo "$req $*" | sha1sum | cut -c1-8)"
  if [ -f "$dir/.hybrik-stamp" ] && [ "$(cat "$dir/.hybrik-stamp")" = "$stamp" ]; then
    return
  fi
  echo ">> setting up $dir (first run: about a minute)" >&2
  rm -rf "$dir"
  "$(find_python)" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$req" "$@" >&2
  if [ "$req" = requirements/main.txt ]; then
    # wheels whose declared dependencies must not come in (see the file)
    "$dir/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
      -r requirements/nodeps.txt >&2
  fi
  echo "$stamp" > "$dir/.hybrik-stamp"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  run)
    ensure_venv .venv requirements/main.txt
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    exec .venv/bin/"$@"
    ;;
  test)
    ensure_venv .venv requirements/main.txt
    status=0
    .venv/bin/python -m pytest tests "$@" || status=$?
    for v in $LTS_BLENDERS; do
      dir=".venv-bpy${v%.*}"
      ensure_venv "$dir" requirements/blender-lts.txt "bpy==$v"
      echo ">> Blender-side tests on bpy $v" >&2
      # Blender's Python drives the worker in the main venv, as for users
      HYBRIK_TEST_WORKER_PYTHON="$ROOT/.venv/bin/python" \
        "$dir/bin/python" -m pytest tests/blender -p no:cacheprovider "$@" || status=$?
    done
    exit $status
    ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
