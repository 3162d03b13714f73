#!/usr/bin/env bash
# Every check that needs a GPU, in one run sized for one 10-minute device call (H100 / H200).
#
#   bash benchmarks/gpu_session.sh --prepare   # here: the fixtures the checks read -> .gpu/,
#                                              # faster-coco-eval and shapely wheels for the
#                                              # device's Python 3.12 -> .whl/
#   bash benchmarks/gpu_session.sh             # on the GPU machine (carry [".gpu", ".whl"]):
#                                              # every part below, ~8-9 minutes on an H100
#   bash benchmarks/gpu_session.sh e2e train   # only the parts named; what is open first:
#   bash benchmarks/gpu_session.sh tests e2e nopin pipeline profile train   # ~8 minutes
#                                              # (nopin: e2e without pinned buffers; pipeline:
#                                              # a folder of JPEGs, decoded on the host threads
#                                              # and on one; train: the step after its loss
#                                              # lost 22 of 31 host reads)
#   bash benchmarks/gpu_session.sh compile     # a second call: torch.compile, inference and
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
    # what the device's Python 3.12 lacks: faster-coco-eval (evaluation), shapely (the loader)
    mkdir -p .whl && pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 -d .whl faster-coco-eval==1.8.0 shapely==2.2.0 \
        || echo "wheels missing: evaluation / loader steps will fail there"
    grep -qx "/.gpu/" .git/info/exclude || echo "/.gpu/" >> .git/info/exclude
    grep -qx "/.whl/" .git/info/exclude || echo "/.whl/" >> .git/info/exclude
    du -sh .gpu .whl
    exit 0
fi
export RTMDET_SHARED=$PWD/.gpu PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# the whole log also goes to $OUT (the device tool returns it even when the call runs out of time)
[ -n "${OUT:-}" ] && exec > >(tee "$OUT/gpu_session.log") 2>&1
export PYTHONUNBUFFERED=1
# the wheels into a folder of their own, for the python that holds torch (a bare `pip` may not be it)
if ls .whl/*.whl >/dev/null 2>&1; then
    python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
python -c "import shapely, faster_coco_eval" || echo "WARNING: the carried wheels did not install"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step() {
    local limit=$1 t0=$SECONDS; shift; echo; echo "== [$limit s] $*"
    timeout "$limit" "$@" 2>&1
    echo "-- rc=$?, $((SECONDS - t0)) s (script at ${SECONDS} s)"
}
# Each part has its own time limit so one slow part cannot take the others' time.
# correctness on the GPU first: the tests that need CUDA (NMS, CUDA graphs of the network and
# decoding for the three families, the device letterbox, rotated ops, mask finishing); the CPU
# tests of the same files run in CI
part_tests() {
    step 150 python -m pytest -q -rs -p no:cacheprovider tests/test_nms_fast.py \
        tests/test_speed_options.py tests/test_rotated_ops.py tests/test_mask_finishing.py \
        tests/test_pinned.py tests/test_upload.py -k cuda
}
part_post() { step 75 python benchmarks/bench_postprocess.py --device cuda --runs 5 --old-runs 1 --batches 1 8 32; }
# where the post-processing's time goes on the GPU (operators by device time, wall vs busy)
part_profile() {
    step 60 python benchmarks/bench_postprocess.py --device cuda --runs 3 --old-runs 1 --batches 1 32 \
        --no-paths --profile
}
part_e2e() {
    step 180 python benchmarks/bench_e2e.py --device cuda --batch 32 --runs 20 \
        --models rtmdet-tiny rtmdet-s rtmdet-m rtmdet-x --modes exact fast
}
# what the pinned staging buffers save: the same table with uploads from plain arrays
part_nopin() {
    step 60 python benchmarks/bench_e2e.py --device cuda --batch 32 --runs 20 \
        --models rtmdet-tiny rtmdet-s --modes exact fast --no-pinned
}
part_masks() { step 30 python benchmarks/bench_masks.py --device cuda --runs 5; }
part_pipeline() {
    step 60 python benchmarks/bench_pipeline.py --device cuda --images 256 --batch 32 --half \
        --cuda-graph --device-preprocess
}
# the training step in fp32 and AMP (s, m), then tiny's AMP step against the loader on 14 workers
part_train() {
    step 130 python benchmarks/bench_train.py --device cuda --models rtmdet-s rtmdet-m --sizes 640 \
        --batch 32 --iters 8 --modes fp16 --skip-loader --skip-assigner
    step 100 python benchmarks/bench_train.py --device cuda --models rtmdet-tiny --sizes 640 \
        --batch 32 --iters 8 --modes fp16 --workers 14 --loader-images 448 --loader-batches 28 \
        --skip-assigner --loader-opencv-default
}
# the README's main command, end to end on the GPU (training with AMP, EMA, evaluation, drawing)
part_demo() { step 90 python -m rtmdet demo --device cuda --epochs 20 --out /tmp/rtmdet-demo; }
part_compile() {
    step 270 python benchmarks/bench_e2e.py --device cuda --batch 32 --runs 10 \
        --models rtmdet-tiny --modes exact fast compiled
    step 270 python benchmarks/bench_train.py --device cuda --models rtmdet-tiny --sizes 640 \
        --batch 32 --iters 5 --modes fp16 --compile --skip-loader --skip-assigner
}
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(tests e2e profile post masks pipeline train demo)
for part in "${parts[@]}"; do
    declare -F "part_$part" >/dev/null || { echo "unknown part $part"; exit 2; }
    "part_$part"
done
echo "== done at ${SECONDS} s"
