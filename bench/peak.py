"""The machine's peak FLOP rate, measured with the FMA loops of bench/native.cpp on the
benchmark's threads: the widest float32 FMA this CPU has (AVX-512, else AVX2), and the fastest
bfloat16 product with float32 accumulation: AMX's tile product (tdpbf16ps) where the CPU has
amx_bf16, else the dot product vdpbf16ps where it has avx512_bf16."""

from __future__ import annotations

from torch.utils.benchmark import Timer

from bench import native

DTYPES = ("float32", "bfloat16")
# Each call runs this many iterations of its loop per thread: milliseconds, so the thread
# start-up of a call is noise.
ITERATIONS = 1 << 22


def measure_peaks(device, threads: int, min_run_time: float) -> dict:
    """dtype -> {"isa", "threads", "gflops"}, or None where this CPU (or build) has no loop or
    the run is not on the CPU."""
    module = native.load().module if device.type == "cpu" else None
    return {dtype: measure_peak(module, dtype, threads, min_run_time) for dtype in DTYPES}


def higher_peaks(first: dict, second: dict) -> dict:
    """Per dtype, the higher of two measurements: on a shared machine other work can hold a core
    through one of them, and no load makes the loops faster than the hardware."""
    return {
        dtype: max(first[dtype], second[dtype], key=lambda peak: peak["gflops"])
        if first[dtype]
        else None
        for dtype in DTYPES
    }


def measure_peak(module, dtype: str, threads: int, min_run_time: float) -> dict | None:
    kernel = module.peak_kernel(dtype, ITERATIONS) if module is not None else None
    if kernel is None:
        return None
    isa, flops_per_thread = kernel
    timer = Timer(
        stmt="run(dtype, iterations, threads)",
        globals={"run": module.run_peak_kernel, "dtype": dtype, "iterations": ITERATIONS,
                 "threads": threads},
        num_threads=threads,
    )
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    # The fastest block: this is a peak, and other load on the machine only slows blocks down.
    seconds = min(measurement.times)
    return {"isa": isa, "threads": threads, "gflops": flops_per_thread * threads / seconds / 1e9}
