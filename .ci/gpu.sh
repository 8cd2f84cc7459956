#!/usr/bin/env bash
# The checks that need a GPU, in one command for a machine that has one (CI has none, so .ci/run
# never calls this): builds the CUDA extension in place with every core for this GPU's
# architecture, runs tests/test_cuda.py and the CUDA benchmark (bench/run.py --device cuda
# --quick), and prints a summary. It uses the python3 on PATH and its torch (a CUDA build) as
# they are: GPU machines lent to the project may reach no package registry.
# Usage, from anywhere: bash .ci/gpu.sh [RESULTS]
#   RESULTS  where bench/run.py writes cuda.json, .md and .png and this script its logs
#            (default bench/results; on a lent machine, the folder that comes back)
# Exits non-zero if the build, a test or the benchmark failed; every step runs regardless, so one
# run on a scarce machine reports as much as it can.
set -uo pipefail

cd "$(dirname "$0")/.."
RESULTS="$(realpath -m "${1:-bench/results}")"
mkdir -p "$RESULTS"
start_all=$SECONDS
status=0
summary=()

step() {  # step NAME LOG COMMAND...: runs COMMAND, its output to the terminal and LOG
  local name=$1 log=$2 started=$SECONDS
  shift 2
  if "$@" 2>&1 | tee "$RESULTS/$log"; then
    summary+=("$name: ok in $((SECONDS - started)) s ($log)")
  else
    summary+=("$name: FAILED in $((SECONDS - started)) s ($log)")
    status=1
  fi
}

if ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu.sh: python3's torch sees no GPU (torch.cuda.is_available() is False)" >&2
  exit 1
fi
arch=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
python3 -c "import torch; print('gpu.sh:', torch.cuda.get_device_name(), 'torch', torch.__version__)"

export PYTHONUNBUFFERED=1
step "build (sm_${arch/./})" gpu-build.log \
  env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="$(nproc)" \
  python3 setup.py build_ext --inplace
step "python -m rnnkernels" gpu-build-info.log python3 -m rnnkernels
step "tests/test_cuda.py" gpu-tests.log \
  python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
step "bench/run.py --device cuda --quick" gpu-bench.log \
  python3 bench/run.py --device cuda --quick --out "$RESULTS"

echo
echo "gpu.sh: summary after $((SECONDS - start_all)) s"
for line in "${summary[@]}"; do echo "  $line"; done
grep -E "passed|failed|error" "$RESULTS/gpu-tests.log" | tail -n 1 | sed 's/^/  tests: /'
exit $status
