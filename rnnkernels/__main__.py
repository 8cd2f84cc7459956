"""`python -m rnnkernels`: prints what this build is (torch, oneDNN, the CPU instruction set the
kernels run with here, how its bfloat16 and float16 CPU GEMMs run here, the CUDA targets)."""

import torch

from . import __version__
from ._ops import BUILD_INFO


def main():
    info = BUILD_INFO
    print(f"rnnkernels {__version__}")
    print(f"torch: {torch.__version__} (built against {info['torch']})")
    print(f"oneDNN: {info['onednn'] or 'none (float32 CPU GEMMs through ATen: slower)'}")
    print(f"CPU instruction set: {info['cpu_isa']}")
    print(f"CPU GEMMs of the half types: {info['half_gemms']}")
    print(f"CUDA targets: {info['cuda_archs'] or 'none (CPU-only build)'}")
    if info["cuda_archs"]:
        available = torch.cuda.is_available()
        print(f"CUDA device: {torch.cuda.get_device_name() if available else 'none visible'}")


main()
