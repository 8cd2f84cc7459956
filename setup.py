"""Builds rnnkernels._C: the CPU extension, or the CUDA one when torch has CUDA and nvcc is found
(or FORCE_CUDA=1, which needs no GPU). TORCH_CUDA_ARCH_LIST picks the CUDA targets."""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def build_cuda():
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


cxx_flags = ["-O3"]
common = sources("csrc/*.cpp") + sources("csrc/cpu/*.cpp")
if build_cuda():
    extension = CUDAExtension(
        "rnnkernels._C",
        common + sources("csrc/cuda/*.cpp") + sources("csrc/kernels/*.cu"),
        define_macros=[("RNNKERNELS_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--use_fast_math"]},
    )
else:
    extension = CppExtension("rnnkernels._C", common, extra_compile_args={"cxx": cxx_flags})

setup(
    name="rnnkernels",
    version="0.1.0",
    description="Fused LSTM, GRU and RNN kernels for PyTorch, drop-in for torch.nn",
    packages=find_packages(include=["rnnkernels", "rnnkernels.*"]),
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.9",
    install_requires=["torch", "numpy"],
)
