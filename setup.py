"""Builds rnnkernels._C: the CPU extension, or the CUDA one when torch has CUDA and nvcc is found
(or FORCE_CUDA=1, which needs no GPU). TORCH_CUDA_ARCH_LIST picks the CUDA targets."""

import glob
import os
import platform
import re
import sys
import warnings

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def cuda_toolkit_found():
    # torch takes CUDA_HOME from the environment, else guesses it from the nvcc on PATH; a wrapper
    # script there (as on the project's machines) yields a directory without the toolkit's headers.
    return CUDA_HOME is not None and os.path.isfile(
        os.path.join(CUDA_HOME, "include", "cuda_runtime.h")
    )


def build_cuda():
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if not cuda_toolkit_found():
            raise RuntimeError(
                f"FORCE_CUDA=1 but CUDA_HOME={CUDA_HOME!r} holds no CUDA toolkit "
                "(include/cuda_runtime.h): set CUDA_HOME to the toolkit's directory"
            )
        return True
    return torch.version.cuda is not None and cuda_toolkit_found()


# Sources compiled with extra instruction sets; csrc/cpu/pointwise.cpp picks among them at run time
# (x86-64 only: elsewhere they compile to nothing).
ISA_FLAGS = {
    "csrc/cpu/pointwise_avx2.cpp": ["-mavx2", "-mfma", "-mf16c"],
    "csrc/cpu/pointwise_avx512.cpp": [
        "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
    ],
}
IS_X86_64 = platform.machine() in ("x86_64", "AMD64")


class BuildWithIsaFlags(BuildExtension):
    """BuildExtension, plus per-file flags: compiles the ISA_FLAGS sources first, each with its
    own flags, and links their objects into the extension."""

    def build_extension(self, ext):
        isa_sources = [s for s in ext.sources if s in ISA_FLAGS]
        ext.sources = [s for s in ext.sources if s not in ISA_FLAGS]
        args = ext.extra_compile_args
        base = list(args["cxx"] if isinstance(args, dict) else args)
        for source in isa_sources:
            flags = base + (ISA_FLAGS[source] if IS_X86_64 else [])
            ext.extra_objects += self.compiler.compile(
                [source],
                output_dir=self.build_temp,
                macros=ext.define_macros,
                include_dirs=ext.include_dirs,
                extra_postargs={"cxx": flags} if isinstance(args, dict) else flags,
            )
        super().build_extension(ext)


def find_onednn():
    """oneDNN >= 3 (headers + libdnnl): RNNKERNELS_ONEDNN_ROOT, else this Python's prefix, where
    `pip install onednn-cpu-gomp onednn-devel-cpu-gomp` puts them. The GNU OpenMP build matters:
    torch's libgomp is then the only OpenMP runtime in the process."""
    for root in filter(None, [os.environ.get("RNNKERNELS_ONEDNN_ROOT"), sys.prefix]):
        version = os.path.join(root, "include", "oneapi", "dnnl", "dnnl_version.h")
        library = os.path.join(root, "lib", "libdnnl.so")
        if os.path.exists(version) and os.path.exists(library):
            major = re.search(r"#define DNNL_VERSION_MAJOR (\d+)", open(version).read())
            if major and int(major.group(1)) >= 3:
                return root
    return None


# OpenMP: ATen's CPU threads are OpenMP's, and csrc/cpu/backend.h sets what regions nested in
# its own per-thread work get.
cxx_flags = ["-O3", "-fopenmp"]
common = (sources("csrc/*.cpp") + sources("csrc/ops/*.cpp") + sources("csrc/layer/*.cpp")
          + sources("csrc/cpu/*.cpp"))
onednn = find_onednn()
# What csrc/build_info.cpp reports, as bare tokens (it stringifies them).
macros = [("RNNKERNELS_BUILT_WITH_TORCH", torch.__version__)]
# include/: the public header (rnnkernels/ops.h), which the library calls its operators through.
include_dirs = [os.path.join(ROOT, "include")]
extension_options = {"extra_link_args": ["-fopenmp"], "define_macros": macros,
                     "include_dirs": include_dirs}
if onednn:
    include_dirs.append(os.path.join(onednn, "include"))
    extension_options.update(
        library_dirs=[os.path.join(onednn, "lib")],
        libraries=["dnnl"],
        runtime_library_dirs=[os.path.join(onednn, "lib")],
    )
    macros.append(("RNNKERNELS_WITH_ONEDNN", "1"))
else:
    common.remove("csrc/cpu/onednn_gemm.cpp")
    warnings.warn(
        "rnnkernels: oneDNN >= 3 not found, float32 CPU GEMMs will use ATen's (slower). "
        "`pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0` before building "
        "to use it; the installed package warns about this at import."
    )
if build_cuda():
    # The sm_XX targets TORCH_CUDA_ARCH_LIST (or torch's default) asks for, joined by "/".
    arch_flags = torch.utils.cpp_extension._get_cuda_arch_flags()
    archs = sorted(set(re.findall(r"code=(sm_\d+a?)", " ".join(arch_flags))))
    macros.append(("RNNKERNELS_CUDA_ARCHS", "/".join(archs)))
    extension = CUDAExtension(
        "rnnkernels._C",
        common + sources("csrc/cuda/*.cpp") + sources("csrc/kernels/*.cu"),
        # No --use_fast_math: the step kernels are memory-bound, so approximate exp/tanh and
        # flushed denormals would cost accuracy against torch.nn and buy no speed.
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
        **extension_options,
    )
else:
    extension = CppExtension(
        "rnnkernels._C", common, extra_compile_args={"cxx": cxx_flags}, **extension_options
    )

# Metadata (name, version, dependencies) lives in pyproject.toml.
setup(ext_modules=[extension], cmdclass={"build_ext": BuildWithIsaFlags})
