#!/usr/bin/env bash
# Every check that needs a GPU, in one run sized for one 10-minute device call (H100 / H200).
#
#   bash benchmarks/gpu_session.sh --prepare   # here: the fixtures the checks read -> .gpu/,
#                                              # faster-coco-eval for Python 3.12 -> .whl/
#   bash benchmarks/gpu_session.sh             # on the GPU machine (carry [".gpu", ".whl"]):
#                                              # ~9.5 minutes, within one call's 10
#   bash benchmarks/gpu_session.sh --compile   # a second call: torch.compile, inference and
#                                              # training (compiling takes minutes)
#
# .gpu/ and .whl/ stay out of git (.git/info/exclude); ../shared does not travel to the device
# machine, so RTMDET_SHARED points the tests and benchmarks at the copy (tests needing the
# other fixtures skip there). Each step has its own
# time limit so one slow step cannot take the others' time; the output is the log.
set -u
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
    # the detection fixture's weights and the predict cases without their `input` tensor, every
    # tensor re-saved apart from the storage it was a view of (~30 MB of a 64 MiB carry)
    python - "${RTMDET_SHARED:-$PWD/../shared}" <<'PY'
import shutil, sys
from pathlib import Path
import torch
src = Path(sys.argv[1]) / "fixtures" / "rtmdet_tiny_8xb32-300e_coco"
dst = Path(".gpu/fixtures") / src.name
dst.mkdir(parents=True, exist_ok=True)
for name in ("weights.pth", "config.json"):
    shutil.copy(src / name, dst / name)
for case in ("square", "portrait", "large"):
    fix = torch.load(src / f"predict_{case}.pth", weights_only=True)
    torch.save({k: v.clone() if torch.is_tensor(v) else v for k, v in fix.items() if k != "input"},
               dst / f"predict_{case}.pth")
PY
    mkdir -p .whl && pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        -d .whl faster-coco-eval==1.8.0 || echo "no faster-coco-eval wheel (evaluation tests skip)"
    grep -qx "/.gpu/" .git/info/exclude || echo "/.gpu/" >> .git/info/exclude
    grep -qx "/.whl/" .git/info/exclude || echo "/.whl/" >> .git/info/exclude
    du -sh .gpu .whl
    exit 0
fi
export RTMDET_SHARED=$PWD/.gpu PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
ls .whl/*.whl >/dev/null 2>&1 && pip install -q --no-deps --no-index .whl/*.whl
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step() { local limit=$1; shift; echo; echo "== [$limit s] $*"; timeout "$limit" "$@" 2>&1 | tail -n 60; }
if [ "${1:-}" = "--compile" ]; then
    step 270 python benchmarks/bench_e2e.py --device cuda --batch 32 --runs 10 \
        --models rtmdet-tiny --modes exact fast compiled
    step 270 python benchmarks/bench_train.py --device cuda --models rtmdet-tiny --sizes 640 \
        --batch 32 --iters 5 --modes fp16 --compile --skip-loader --skip-assigner
    exit 0
fi
# correctness on the GPU first: NMS (block-wise and fixed-shape, its CUDA graph), speed options
# (CUDA graphs, fp16), rotated ops, masks; of test_fixed_nms only the CUDA tests (the others are
# the CPU's)
step 170 python -m pytest -q -rs -x tests/test_nms_fast.py tests/test_fixed_nms.py \
    tests/test_speed_options.py tests/test_rotated_ops.py tests/test_mask_finishing.py \
    tests/test_prefetch.py -k "not test_fixed_nms or cuda"
step 60 python benchmarks/bench_postprocess.py --device cuda --runs 5 --old-runs 1
step 120 python benchmarks/bench_e2e.py --device cuda --batch 32 --runs 10 \
    --models rtmdet-tiny rtmdet-s rtmdet-x --modes exact fast
step 30 python benchmarks/bench_masks.py --device cuda --runs 5
step 45 python benchmarks/bench_pipeline.py --device cuda --images 256 --batch 32 --half \
    --cuda-graph --device-preprocess
step 140 python benchmarks/bench_train.py --device cuda --models rtmdet-s rtmdet-m --sizes 640 \
    --batch 32 --iters 5 --workers 14 --loader-images 448 --loader-batches 28 --skip-assigner \
    --loader-opencv-default
