#!/usr/bin/env bash
# The CUDA checks that need no GPU (docs/DESIGN.md, "CUDA without a GPU"):
#   1. nvcc compiles every csrc/kernels/*.cu, and the tests' cell, for sm_80 and sm_90, warnings
#      as errors;
#   2. the full CUDA extension builds against a CUDA build of torch, in a venv of its own (the
#      project's .venv keeps its CPU torch), and installs;
#   3. the installed package imports and registers CPU and CUDA kernels for the generic layer
#      operators (every other operator is a composite of them).
# Usage, from anywhere: bash .ci/cuda.sh. Exits non-zero on the first failure.
#   CUDA_HOME             the toolkit (default /usr/local/cuda-13.0; the nvcc on PATH is a
#                         wrapper script, from which torch would guess a wrong CUDA_HOME)
#   RNNKERNELS_CUDA_VENV  the venv (default ~/.cache/rnnkernels/cuda-venv), kept between runs:
#                         its torch is 5.5 GB, and a venv that has it skips the install
#   RNNKERNELS_CUDA_TORCH the torch version (default 2.14.1)
set -euo pipefail

cd "$(dirname "$0")/.."
REPO="$(pwd)"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda-13.0}"
VENV="${RNNKERNELS_CUDA_VENV:-$HOME/.cache/rnnkernels/cuda-venv}"
# The newest torch pip serves on the project's machines (it refuses newer ones: `torch<=2.14.1`),
# a CUDA 13.0 build that pip takes from the machine's disk, matching the local toolkit.
TORCH_VERSION="${RNNKERNELS_CUDA_TORCH:-2.14.1}"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

start_all=$SECONDS
step_start=$SECONDS
step_done() {
  echo "cuda.sh: $1 took $((SECONDS - step_start)) s"
  step_start=$SECONDS
}

echo "cuda.sh: compiling csrc/kernels/*.cu with $CUDA_HOME/bin/nvcc"
# The tests' cell too (tests/cuda_emulation/test_cells.h): the only cell that is row-wise with
# a per-row input and no dense recurrence.
for kernel in csrc/kernels/*.cu tests/cuda_emulation/test_cells_cu.cpp; do
  # Plain nvcc, no torch flags: the kernels must stay torch-free and warning-free on their own.
  "$CUDA_HOME/bin/nvcc" -std=c++17 -Werror all-warnings --threads 2 \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    -I csrc -I tests/cuda_emulation -x cu -c "$kernel" -o "$SCRATCH/$(basename "$kernel").o"
done
step_done "kernel compile (sm_80, sm_90)"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# A no-op taking seconds when the venv already has these. oneDNN as in README's install, so the
# build is the one a CUDA user gets (CPU float32 GEMMs through oneDNN, linked beside CUDA).
"$VENV/bin/pip" install --quiet "torch==$TORCH_VERSION" pybind11 ninja numpy setuptools wheel \
  onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0
"$VENV/bin/python" -c "import torch, sys; sys.exit(torch.version.cuda is None)" || {
  echo "cuda.sh: $VENV has a torch without CUDA; remove the venv and run again" >&2
  exit 1
}
step_done "venv with torch $TORCH_VERSION (CUDA) at $VENV"

# Built from a copy of what the package is made of (tracked files and new ones git does not
# ignore), so that the working tree's build/ and in-place _C (the CPU extension) never mix with
# the CUDA build's.
mkdir "$SCRATCH/src"
git ls-files -z --cached --others --exclude-standard -- setup.py pyproject.toml include csrc rnnkernels |
  tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$SCRATCH/src"
# MAX_JOBS=2: the project's machines have 2 cores. --no-deps keeps the venv's torch as it is.
(cd "$SCRATCH/src" && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" MAX_JOBS=2 \
  "$VENV/bin/pip" install --no-build-isolation --no-deps --force-reinstall .)
step_done "CUDA extension build and install"

CUOBJDUMP="$CUDA_HOME/bin/cuobjdump"
# The toolkit on the project's machines has no cuobjdump; torch's dependency triton ships one.
[ -x "$CUOBJDUMP" ] || CUOBJDUMP="$(echo "$VENV"/lib/python3*/site-packages/triton/backends/nvidia/bin/cuobjdump)"
# From another directory, so that Python imports the installed package, not the source tree.
(cd "$SCRATCH" && "$VENV/bin/python" - "$REPO" "$CUOBJDUMP" <<'EOF'
import os
import subprocess
import sys

import torch

import rnnkernels
from rnnkernels import _C

repo, cuobjdump = os.path.realpath(sys.argv[1]), sys.argv[2]
package = os.path.realpath(os.path.dirname(rnnkernels.__file__))
assert not package.startswith(repo + os.sep), f"imported the source tree at {package}"
print(f"cuda.sh: imported rnnkernels from {package} with torch {torch.__version__}")

# The generic layer operators have the device kernels; every other operator is a composite of them.
operators = ["layer", "layer_backward"]
missing = [
    f"rnnkernels::{op} ({key})"
    for op in operators
    for key in ("CPU", "CUDA")
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"rnnkernels::{op}", key)
]
assert not missing, f"no kernel registered for {missing}"
print(f"cuda.sh: CPU and CUDA kernels registered for {len(operators)} operators")

# The library holds real code for both targets asked for in TORCH_CUDA_ARCH_LIST.
elf = subprocess.run([cuobjdump, "--list-elf", _C.__file__], check=True, capture_output=True,
                     text=True).stdout
for arch in ("sm_80", "sm_90"):
    assert f".{arch}." in elf, f"no {arch} code in {_C.__file__}:\n{elf}"
print("cuda.sh: kernels built for sm_80 and sm_90")
info = rnnkernels._ops.BUILD_INFO
assert info["cuda_archs"] == "sm_80 sm_90", f"the build reports CUDA targets {info}"
print(f"cuda.sh: the build reports {info}")

# This build's CPU kernels work (it compiles the CPU sources with other flags than the CPU build);
# float32, so that the oneDNN GEMMs run too.
x, h0, c0, w_ih, w_hh, b_ih, b_hh = (
    torch.randn(*shape)
    for shape in ((6, 3), (3, 4), (3, 4), (16, 3), (16, 4), (16,), (16,))
)
batch_sizes = torch.tensor([3, 2, 1])
got = torch.ops.rnnkernels.lstm_layer(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, None,
                                      False, False)[:3]
want = rnnkernels.reference.lstm_layer(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh)
for g, w in zip(got, want):
    torch.testing.assert_close(g, w)
print("cuda.sh: lstm_layer on the CPU matches the reference")
EOF
)
step_done "import and registration check"
echo "cuda.sh: all CUDA checks passed in $((SECONDS - start_all)) s"
