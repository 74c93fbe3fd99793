#!/usr/bin/env bash
# Everything a short GPU loan should run, in one command, with a summary table at the end:
#
#   gpu-tests   the gpu-marked tests (pytest -m gpu): TensorRT engines of both models against ONNX
#               Runtime where TensorRT is installed (skipped, with the reason, where not), AMP
#               training of both models, a CPU checkpoint resumed on the GPU
#   ddp         two-process DDP on the GPU(s) (sharing one GPU over gloo where there is only one):
#               ranks stay identical and learn; the waits on rank 0 use their own timeout
#   train       bench/train.py --device cuda: the trainer end to end against the step alone
#               (target >= 0.90)
#   infer       bench/infer.py --cuda: ms per clip on PyTorch CUDA, ONNX Runtime's CUDA provider
#               and TensorRT, each where present
#
# Needs only the project's venv (plus the `gpu` extra for TensorRT). Each check has a time cap
# (about 7.5 minutes in all); logs go to $GPU_CHECK_LOGS (default: a fresh temp folder). Exit 1
# if a check failed; on a machine without a CUDA device it prints what it skipped and why, and
# exits 0.
#
#   bench/gpu_check.sh                    # PYTHON=... to use another interpreter
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOGS=${GPU_CHECK_LOGS:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$LOGS"
ROWS=()
FAILED=0

row() {  # name status seconds note
    ROWS+=("$(printf '%-10s %-8s %6s  %s' "$1" "$2" "$3" "$4")")
}

check() {  # name cap_seconds note_command -- command...
    local name=$1 cap=$2 note=$3
    shift 3
    local t0=$SECONDS rc
    echo "== $name (cap ${cap} s): $*" >&2
    timeout --kill-after=10 "$cap" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    local took=$((SECONDS - t0)) status=PASS
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status=TIMEOUT
    elif [ "$rc" -ne 0 ]; then
        status=FAIL
    fi
    [ "$status" = PASS ] || FAILED=1
    row "$name" "$status" "$took" "$(eval "$note" 2>/dev/null | tr '\n' ' ' | cut -c1-110)"
}

summary() {
    echo
    printf '%-10s %-8s %6s  %s\n' check status s note
    printf '%s\n' "${ROWS[@]}"
    echo "logs: $LOGS"
}

probe=$("$PY" - <<'EOF' 2>&1
import importlib.util
import torch
cuda = torch.cuda.is_available()
name = torch.cuda.get_device_name() if cuda else "-"
count = torch.cuda.device_count() if cuda else 0
trt = importlib.util.find_spec("tensorrt") is not None
import onnxruntime
ort_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
print(int(cuda), count, int(trt), int(ort_cuda), torch.__version__, torch.version.cuda, name,
      sep="|")
EOF
)
if [ $? -ne 0 ]; then
    echo "error: $PY cannot import torch / onnxruntime: $probe" >&2
    exit 1
fi
IFS='|' read -r CUDA GPUS TRT ORT_CUDA TORCH TORCH_CUDA GPU_NAME <<<"$probe"
echo "torch $TORCH (CUDA $TORCH_CUDA), GPUs: $GPUS ($GPU_NAME), TensorRT installed: $TRT," \
     "onnxruntime CUDA provider: $ORT_CUDA" >&2

if [ "$CUDA" != 1 ]; then
    why="no CUDA device visible to PyTorch (torch.cuda.is_available() is False)"
    for name in gpu-tests ddp train infer; do
        row "$name" SKIP 0 "$why"
    done
    summary
    exit 0
fi

[ "$TRT" = 1 ] || echo "TensorRT is not installed: its tests are skipped (pip install -e '.[gpu]')" >&2
pytest_note='grep -E "^(=+ )?[0-9]+ (passed|failed)|^SKIPPED" "$LOGS/$name.log" | tail -4'
check gpu-tests 210 "$pytest_note" \
    "$PY" -m pytest -q -rs -m gpu -p no:cacheprovider tests/model/test_export.py \
    tests/integration/test_training.py
check ddp 90 "$pytest_note" \
    "$PY" -m pytest -q -rs -m slow -p no:cacheprovider tests/integration/test_training.py \
    -k "two_process_ddp_keeps_ranks or wait_groups_timeout"
train_note='grep -E "^(FAN step alone|trainer loop)" "$LOGS/$name.log"'
check train 90 "$train_note" \
    "$PY" bench/train.py --device cuda --gpu-epochs 3 --steps 30
# The trainer against the step alone: the 0.9 target, read from the bench's own line.
ratio=$(sed -n 's/^end to end \/ step alone: \([0-9.]*\)$/\1/p' "$LOGS/train.log")
if [ -n "$ratio" ]; then
    if awk -v r="$ratio" 'BEGIN { exit !(r >= 0.9) }'; then
        row train-0.9 PASS 0 "end to end / step alone $ratio >= 0.90"
    else
        row train-0.9 FAIL 0 "end to end / step alone $ratio < 0.90"
        FAILED=1
    fi
fi
infer_note='grep -E "^infer cuda|skipped" "$LOGS/$name.log"'
check infer 60 "$infer_note" "$PY" bench/infer.py --cuda --repeats 5
summary
exit "$FAILED"
