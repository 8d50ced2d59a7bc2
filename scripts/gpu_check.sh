#!/usr/bin/env bash
# The CUDA checks of issue 14, for a machine with an NVIDIA GPU (run from the
# repository root; about 3-5 minutes on an H100/H200, each step time-limited
# so the whole stays under 8):
#   1. the CUDA tests (fp32 parity with the CPU, AMP finite and near, auto's
#      check on the GPU, HybrIK-X's CUDA reference test);
#   2. scripts/bench_model.py --device cuda: crops/s for ResNet-34 and
#      HRNet-W48 at batch 1, 64, 256 (fp32, fp32+fold, AMP), against the
#      measured GEMM peak (targets: >= 6,000 and >= 2,000 crops/s);
#   3. scripts/bench_capture.py --hybrik-only --device cuda: end-to-end fps
#      at 1280x720 for both networks (targets: >= 300 and >= 150 fps), without
#      the tracker (known boxes) and, where mediapipe is installed, through
#      the worker CLI with its person tracker.
# Needs torch with CUDA, numpy, opencv(-headless), pytest; mediapipe only for
# the CLI runs of step 3. Logs go to $OUT (default /tmp/gpu_check).
#   PYTHON=python3 OUT=/tmp/gpu_check bash scripts/gpu_check.sh
set -u
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
step() {  # step NAME SECONDS COMMAND...
    local name=$1 secs=$2
    shift 2
    echo "=== $name (limit ${secs} s) ==="
    local t0=$SECONDS
    timeout "$secs" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - t0)) s ==="
    [ "$rc" -eq 0 ] || status=1
}
"$PY" - <<'EOF' 2>&1 | tee "$OUT/environment.txt"
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(torch.cuda.get_device_name(0), f"{p.total_memory / 2**30:.0f} GiB", p.multi_processor_count, "SMs")
try:
    import mediapipe
    print("mediapipe", mediapipe.__version__)
except ImportError:
    print("mediapipe: missing (the worker CLI runs of bench_capture are skipped)")
EOF
step tests 150 "$PY" -m pytest -q -p no:cacheprovider -k "cuda" \
    tests/test_precision.py tests/test_hybrikx_golden.py
step bench_model 180 "$PY" scripts/bench_model.py --device cuda --arch res34_cam hrnet48_cam \
    --batches 1 64 256 --rounds 10 --ik-batch 4096
step bench_capture 150 "$PY" scripts/bench_capture.py --hybrik-only --device cuda \
    --hybrik-arch res34_cam hrnet48_cam --hybrik-frames 900 --repeats 1
echo "logs in $OUT; overall: $([ $status -eq 0 ] && echo ok || echo FAILED)"
exit $status
