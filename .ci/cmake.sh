#!/usr/bin/env bash
# The LibTorch build (CMakeLists.txt): configures against the torch of the `python` on PATH (a
# venv's, when one is active: .ci/run calls this with its venv active), builds librnnkernels.so
# and examples/cpp with -j2, and runs the example, which calls rnnkernels::lstm_layer through the
# dispatcher and checks its output. When the CUDA toolkit is there, the build also compiles the
# torch-free kernels with plain nvcc (RNNKERNELS_KERNEL_CHECK).
# Usage, from anywhere: bash .ci/cmake.sh. Exits non-zero on the first failure.
#   CUDA_HOME  the toolkit (default /usr/local/cuda-13.0; the nvcc on PATH is a wrapper script)
set -euo pipefail

cd "$(dirname "$0")/.."
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda-13.0}"
# A fresh build directory every run: CI checks a configure from scratch, not a cached one.
BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT

start_all=$SECONDS
step_start=$SECONDS
step_done() {
  echo "cmake.sh: $1 took $((SECONDS - step_start)) s"
  step_start=$SECONDS
}

options=(-DCMAKE_PREFIX_PATH="$(python -c 'import torch; print(torch.utils.cmake_prefix_path)')")
if [ -x "$CUDA_HOME/bin/nvcc" ]; then
  options+=(-DRNNKERNELS_KERNEL_CHECK=ON -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc")
else
  echo "cmake.sh: no nvcc at $CUDA_HOME/bin, skipping the kernel compile check"
fi
cmake -S . -B "$BUILD" "${options[@]}"
step_done "configure"

cmake --build "$BUILD" -j2
step_done "build"

"$BUILD/examples/cpp/lstm_layer_example"
step_done "example"
echo "cmake.sh: LibTorch build and example passed in $((SECONDS - start_all)) s"
