"""Builds bench/native.cpp on first use (oneDNN's RNN primitive and the peak FMA loops) and
says why where it cannot."""

from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).resolve().with_name("native.cpp")
# Inside the checkout (build/ is ignored), so worktrees sharing one user never share a build.
BUILD_DIRECTORY = SOURCE.parents[1] / "build" / "bench_native"
ONEDNN_INSTALL = "pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0"


@dataclass(frozen=True)
class Native:
    """The built module (None where it did not build) and the oneDNN it links (None where
    none was found)."""

    module: ModuleType | None
    onednn_root: str | None
    missing: str | None  # why the module, or its oneDNN RNN, is missing; None where neither is

    @property
    def has_onednn_rnn(self) -> bool:
        return self.module is not None and hasattr(self.module, "Rnn")


def find_onednn() -> str | None:
    """The oneDNN rnnkernels builds against, by setup.py's rule: RNNKERNELS_ONEDNN_ROOT, else
    this Python's prefix (the onednn-cpu-gomp wheels), holding oneDNN >= 3's headers and
    libdnnl."""
    for root in filter(None, (os.environ.get("RNNKERNELS_ONEDNN_ROOT"), sys.prefix)):
        header = Path(root, "include", "oneapi", "dnnl", "dnnl_version.h")
        if header.exists() and Path(root, "lib", "libdnnl.so").exists():
            major = re.search(r"#define DNNL_VERSION_MAJOR (\d+)", header.read_text())
            if major and int(major.group(1)) >= 3:
                return root
    return None


@functools.cache
def load() -> Native:
    """Compiles (once per checkout and source version; torch caches the build) and imports the
    module. Without oneDNN it still builds, with the peak loops alone."""
    from torch.utils.cpp_extension import load as load_extension

    root = find_onednn()
    # csrc/: the torch-free headers the benchmark shares with the extension (cpu/row_stride.h).
    options = {
        "extra_cflags": ["-O3", "-fopenmp"],
        "extra_ldflags": ["-fopenmp"],
        "extra_include_paths": [str(SOURCE.parents[1] / "csrc")],
    }
    if root:
        # -I before torch's own include folder, which holds the headers of torch's (other)
        # bundled oneDNN: these must match the libdnnl this links.
        options["extra_include_paths"].insert(0, str(Path(root, "include")))
        options["extra_cflags"].append("-DBENCH_WITH_ONEDNN")
        library = str(Path(root, "lib"))
        options["extra_ldflags"] += [f"-L{library}", "-ldnnl", f"-Wl,-rpath,{library}"]
    BUILD_DIRECTORY.mkdir(parents=True, exist_ok=True)
    print("loading bench/native.cpp (built on first use)", file=sys.stderr, flush=True)
    try:
        module = load_extension(
            name="rnnkernels_bench_native" + ("_onednn" if root else ""),
            sources=[str(SOURCE)],
            build_directory=str(BUILD_DIRECTORY),
            with_cuda=False,
            **options,
        )
    # Any failure (no compiler, no headers, a link error) only leaves its columns out.
    except Exception as error:  # noqa: BLE001
        return Native(None, root, f"bench/native.cpp did not build: {first_line(error)}")
    missing = None if root else f"oneDNN >= 3 not found ({ONEDNN_INSTALL})"
    return Native(module, root, missing)


def first_line(error: BaseException) -> str:
    """`Type: the message's first line`, short enough for a table's note."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
