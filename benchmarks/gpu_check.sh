#!/usr/bin/env bash
# The GPU checks in one device call (see benchmarks/gpu_kit.py), from the repository root there:
#   here:  python benchmarks/gpu_kit.py pack
#   there: device run, carry [".gpu"], timeout_s 600, command: bash benchmarks/gpu_check.sh
# 1. tests/worker/test_cuda.py (about 80 s on an H200; 150 s at most);
# 2. benchmarks/dylora_ranks.py alone on the GPU (one process, so its wall times are clean):
#    SST-2 seed 0 with the CPU runs' setting, DyLoRA frozen and unfrozen, LoRA at ranks 1-8 and
#    LoRA-8 truncated (about 5 minutes; 330 s at most), written run by run to $OUT
#    (resumable: pass the file back with --runs to finish it in a second call).
# Back here: python benchmarks/dylora_ranks.py --report FILE --label gpu --record
#   (--label keeps the CPU row of the summary; without it the GPU run would replace it)
# GPU_CHECK_DRY=cpu runs the same steps on the CPU with 20 steps, to test this script here.
# Without a GPU (and without GPU_CHECK_DRY) it stops after the versions, exit 2.
# Timeouts (150 s + 330 s, plus about a minute of installing) fit one 600 s device call.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
device=cuda steps=1000
if [ "${GPU_CHECK_DRY:-}" = cpu ]; then device=cpu steps=20; fi
# the GPU image's own torch: checked before anything is installed
if [ "$device" = cuda ] && ! python3 -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo "gpu_check: torch sees no CUDA device here, nothing to check (GPU_CHECK_DRY=cpu runs this script on the CPU)" >&2
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl || exit 1
python3 benchmarks/gpu_kit.py unpack .gpu /tmp/gpu || exit 1
export PYTHONPATH=/tmp/gpu/shim:/tmp/site ARCHSEARCH_GLUE_DIR=/tmp/gpu/glue
python3 - <<'EOF' | tee "$OUT/versions.txt"
import importlib.metadata as m, torch
print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
print(*(f"{d}=={m.version(d)}" for d in ("transformers", "peft", "optuna", "archsearch")))
EOF

if [ "$device" = cuda ]; then
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/worker/test_cuda.py 2>&1 \
        | tee "$OUT/test_cuda.log" | tail -5
fi
timeout "${GPU_CHECK_DYLORA_S:-330}" python3 benchmarks/dylora_ranks.py --tasks sst2 --seeds 0 \
    --dylora frozen,unfrozen --steps "$steps" --train-subset 20000 --eval-subset 512 \
    --lr 2e-3 --batch 16 --seq 64 --device "$device" --precision fp32 \
    --runs "$OUT/dylora_ranks_gpu_alone.json" 2>&1 | tee "$OUT/dylora_ranks.log" | tail -30
