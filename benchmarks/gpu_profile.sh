#!/usr/bin/env bash
# Profiling on a GPU: `planner profile --preset full --device cuda` on the device tool's GPU machine,
# one task per call, into results/full/profiles/<gpu-tag>/ (e.g. cuda-nvidia-h200).
#
# The GPU machine has no network, a Python 3.12 without pydantic or the MiniLM package, and takes at most
# 64 MiB per call (working tree + carried folders). So, here, first (see benchmarks/gpu_stage.py), in the
# checkout the device tool sends (the session's own, also when a helper in another worktree calls it):
#
#   python benchmarks/gpu_stage.py build     # stages .gpu/: wheels, fp16-packed full checkpoints, eval data
#                                            # and prints each call's size and the exact steps; it refuses
#                                            # (exit 2) while the tracked results/ (~51 MiB) would travel:
#   git sparse-checkout set --no-cone '/*' '!/results/'   # leaves results/ out of the working tree (never
#                                            # cone mode: it deletes ignored files such as data/cifar10/)
#   python benchmarks/gpu_stage.py plan      # exit 0: every call fits
#
# Sizes measured on 2026-12-01: tracked tree 53.7 MiB, 2.6 MiB without results/; .gpu/common 2.7 MiB
# (wheels); .gpu/cifar10 52.9 MiB (test set 27.1, resnet18 21.4, mobilenet_v2 4.4); .gpu/sst2 38.9 MiB
# (minilm-l6 24.1 and minilm-l3 13.9 with 4,547 of 30,522 embedding rows; tokenizer 0.7). So the cifar10
# call sends 58.2 MiB and the sst2 call ~44 MiB plus the first call's results (a few MiB).
#
# then, with the device tool, in this order (the second call resumes from the first call's results):
#
#   run(command="bash benchmarks/gpu_profile.sh cifar10", carry=[".gpu/common", ".gpu/cifar10", ".gpu/resume"],
#       timeout_s=270)
#   mkdir -p .gpu/resume && cp <files_at>/profiles-cuda-*.tar.gz .gpu/resume/
#   run(command="bash benchmarks/gpu_profile.sh sst2", carry=[".gpu/common", ".gpu/sst2", ".gpu/resume"],
#       timeout_s=270)
#   give_back()
#   git sparse-checkout disable              # restores results/
#   tar -xzf <files_at>/profiles-cuda-*.tar.gz -C results/full/profiles/   # then commit that folder
#
# Each call: fails fast (exit 3) when no CUDA device is visible, before installing anything; prints
# nvidia-smi and the library versions and ONNX Runtime providers; installs the carried wheels into
# /tmp; unpacks data and checkpoints into $GPU_WORK_DIR (default /tmp/planner-gpu); resumes the carried
# results; profiles the task under a wall-clock budget ($GPU_PROFILE_BUDGET_S, default 180 s per task,
# 420 s for `all`, sized from ~55 + ~65 configurations, configs/presets.yaml profile_cuda); and writes
# to $OUT: profiles-<gpu-tag>.tar.gz (the whole profile folder so far, with the staging record
# gpu_staging.json inside) and gpu_profile-<task>.log. A run cut by the budget exits 75 after packaging
# its partial results: the next call with them in .gpu/resume continues where it stopped.
# GPU_PROFILE_TESTS=1 first runs the test_cuda_* tests of tests/test_gpu_profile.py (about 30 s more).
# ONNX Runtime on the GPU: the machine's onnxruntime is the CPU build and onnxruntime-gpu (hundreds of
# MB) cannot travel, so its CUDA and TensorRT rows are recorded infeasible with that reason; were a GPU
# build there, TensorRT int8 would also need CIFAR-10 calibration images, which are not staged.
set -uo pipefail

TASK=${1:-}
case "$TASK" in
  cifar10|sst2) TASKS=("$TASK"); DEFAULT_BUDGET=180 ;;
  all) TASKS=(cifar10 sst2); DEFAULT_BUDGET=420 ;;
  *) echo "usage: bash benchmarks/gpu_profile.sh cifar10|sst2|all   (see the comment at the top)" >&2; exit 64 ;;
esac
PY=${GPU_PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAGE=${GPU_STAGE_DIR:-$ROOT/.gpu}
WORK=${GPU_WORK_DIR:-/tmp/planner-gpu}
BUDGET=${GPU_PROFILE_BUDGET_S:-$DEFAULT_BUDGET}
OUT=${OUT:-$ROOT/.gpu/out}
mkdir -p "$OUT"
LOG="$OUT/gpu_profile-$TASK.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$ROOT" || exit 1

profile_on_gpu() {
echo "== gpu_profile.sh $TASK ($(date -u +%FT%TZ)), budget ${BUDGET} s"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
else
  echo "nvidia-smi: not found"
fi

# 1. CUDA or nothing: stop before installing or unpacking anything
if ! "$PY" - <<'EOF'
import sys
try:
    import torch
except Exception as exc:  # no torch at all
    print(f"torch does not import: {exc}")
    sys.exit(3)
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if not torch.cuda.is_available():
    sys.exit(3)
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
      f"bf16 native: {torch.cuda.is_bf16_supported(including_emulation=False)}")
EOF
then
  echo "error: no CUDA device visible to $PY (torch.cuda.is_available() is False). gpu_profile.sh runs on the"
  echo "GPU machine through the device tool; nothing was installed or profiled."
  exit 3
fi

# 2. what was staged here (benchmarks/gpu_stage.py build) must have been carried
for t in "${TASKS[@]}"; do
  if [ ! -f "$STAGE/common/STAGE.json" ] || [ ! -d "$STAGE/$t" ]; then
    echo "error: $STAGE/common or $STAGE/$t is missing: run \`python benchmarks/gpu_stage.py build\` on the CPU"
    echo "machine and name .gpu/common and .gpu/$t in the device call's carry."
    exit 4
  fi
done

# 3. the missing packages, from the carried wheels (no index: nothing can be downloaded here)
SITE="$WORK/site"
rm -rf "$SITE" && mkdir -p "$SITE"
if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$STAGE"/common/wheels/*.whl; then
  echo "error: installing the carried wheels failed (see above)"; exit 5
fi
PYTHONPATH="$SITE:$ROOT"
[ -d "$STAGE/sst2/site" ] && PYTHONPATH="$STAGE/sst2/site:$PYTHONPATH"
export PYTHONPATH

# 4. versions, then data and fp32 checkpoints rebuilt from the packed ones
echo "== libraries"
rm -rf "$WORK/data" "$WORK/cache"
if ! "$PY" "$ROOT/benchmarks/gpu_stage.py" unpack --stage "$STAGE" --into "$WORK" --tasks "${TASKS[@]}" \
    --env-file "$WORK/planner.env"; then
  echo "error: unpacking the staged data and weights failed"; exit 6
fi
# shellcheck disable=SC1091
source "$WORK/planner.env"
export PLANNER_RESULTS_DIR="$WORK/results"
PROFILES="$PLANNER_RESULTS_DIR/full/profiles"
rm -rf "$PLANNER_RESULTS_DIR" && mkdir -p "$PROFILES"
shopt -s nullglob
RESUME=("$STAGE"/resume/profiles-*.tar.gz)
if [ ${#RESUME[@]} -gt 1 ]; then
  echo "error: several tars in $STAGE/resume (${RESUME[*]}): keep only the latest call's"; exit 4
elif [ ${#RESUME[@]} -eq 1 ]; then
  echo "== resuming from ${RESUME[0]}"
  tar -xzf "${RESUME[0]}" -C "$PROFILES" || { echo "error: cannot extract ${RESUME[0]}"; exit 4; }
fi

if [ "${GPU_PROFILE_TESTS:-0}" = 1 ]; then
  echo "== CUDA tests"
  "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_profile.py -k test_cuda_ || echo "warning: CUDA tests failed"
fi

# 5. the sweep, bounded: SIGINT at the budget (the store keeps every finished configuration)
echo "== planner profile --preset full --device cuda --task $TASK"
timeout -k 20 -s INT "$BUDGET" "$PY" -m planner profile --preset full --device cuda --task "$TASK" --no-progress
RC=$?

# 6. package the whole profile folder so far (the next call resumes from it)
TAGS=("$PROFILES"/cuda-*)
if [ ${#TAGS[@]} -ne 1 ]; then
  echo "error: expected one cuda-* folder in $PROFILES, found: ${TAGS[*]:-none}"; exit 7
fi
TAG=$(basename "${TAGS[0]}")
cp "$STAGE/common/STAGE.json" "${TAGS[0]}/gpu_staging.json"
TAR="$OUT/profiles-$TAG.tar.gz"
tar -czf "$TAR" -C "$PROFILES" "$TAG"
SIZE=$(stat -c %s "$TAR")
echo "== $TAR: $((SIZE / 1024)) KiB"
if [ "$SIZE" -gt $((16 * 1024 * 1024)) ]; then  # the device tool returns files of at most 16 MiB
  split -b 15M -d "$TAR" "$TAR.part-" && rm "$TAR"
  echo "split into $(ls "$TAR".part-* | wc -l) parts: cat profiles-$TAG.tar.gz.part-* > profiles-$TAG.tar.gz"
fi
if [ -f "${TAGS[0]}/profiles.csv" ]; then
  echo "profiles.csv: $(($(wc -l < "${TAGS[0]}/profiles.csv") - 1)) configurations measured (all tasks so far)"
fi
case $RC in
  0) echo "done: $TASK profiled" ;;
  124|137) echo "budget of ${BUDGET} s reached: partial results packaged; carry them in .gpu/resume to continue"
           exit 75 ;;
  *) echo "error: planner profile exited $RC (partial results packaged)"; exit "$RC" ;;
esac
}

# one synchronous pipe, so the log and the output end together
profile_on_gpu 2>&1 | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
