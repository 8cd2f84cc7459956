"""The GEMM bound of a layer: the time its GEMMs take alone, with the project's fastest GEMM.

A fused RNN layer cannot beat the matrix products it has to do, so the bound divided by the
layer's time says how much of the time goes elsewhere (pointwise work, launches, overhead).
Bias gradients are reductions, not GEMMs, and are left out.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.benchmark import Timer

from bench.shapes import GATES, Shape


def make_gemm(
    m: int, k: int, n: int, dtype: torch.dtype, device: torch.device
) -> Callable[[], object]:
    """Returns a call computing one [m, k] @ [k, n] product, operands made here.

    The one place that says which GEMM the bound uses: the one the kernels use. float32 on the
    CPU: oneDNN's matmul with the weight prepacked for this m, as rnnkernels' per-step GEMMs
    (torch's own oneDNN build, reached through torch.ops.mkldnn). Elsewhere ATen's torch.mm
    (cuBLAS on CUDA), as the kernels.
    """
    a = torch.randn(m, k, dtype=dtype, device=device)
    if device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available():
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.randn(n, k, dtype=dtype), m)
        linear = torch.ops.mkldnn._linear_pointwise
        return lambda: linear(a, weight, None, "none", [], "")
    b = torch.randn(k, n, dtype=dtype, device=device)
    out = torch.empty(m, n, dtype=dtype, device=device)
    return lambda: torch.mm(a, b, out=out)


@dataclass(frozen=True)
class Gemm:
    """`count` products of an [m, k] by a [k, n] matrix."""

    m: int
    k: int
    n: int
    count: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


def layer_gemms(kind: str, shape: Shape, training: bool) -> list[Gemm]:
    """The GEMMs of a forward (and, when training, backward) pass through the whole stack."""
    gemms = []
    for layer in range(shape.layers):
        layer_input = shape.input_size if layer == 0 else shape.hidden_size * shape.directions
        for _ in range(shape.directions):
            gemms += direction_gemms(kind, shape, layer_input, training)
    return gemms


def direction_gemms(kind: str, shape: Shape, layer_input: int, training: bool) -> list[Gemm]:
    """The GEMMs of one direction of one layer (the haste / cuDNN algorithm)."""
    steps, batch, hidden = shape.seq_len, shape.batch, shape.hidden_size
    rows = steps * batch
    gates = GATES[kind] * hidden
    forward = [
        Gemm(rows, layer_input, gates, 1),  # input projection of all steps: x W_ih^T
        Gemm(batch, hidden, gates, steps),  # per step: h_{t-1} W_hh^T
    ]
    if not training:
        return forward
    backward = [
        Gemm(batch, gates, hidden, steps),  # per step: dgates W_hh -> dh_{t-1}
        Gemm(gates, rows, hidden, 1),  # dW_hh = dgates^T h
        Gemm(gates, rows, layer_input, 1),  # dW_ih = dgates^T x
        Gemm(rows, gates, layer_input, 1),  # dx = dgates W_ih (the benchmark's input needs grad)
    ]
    return forward + backward


class GemmBound:
    """Times each distinct GEMM shape once and adds up a layer's GEMMs from those times.

    Timing distinct shapes rather than the whole list keeps the bound cheap: a layer repeats one
    per-step shape `seq_len` times, and training repeats inference's shapes.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device, threads: int, min_run_time: float):
        self.dtype = dtype
        self.device = device
        self.threads = threads
        self.min_run_time = min_run_time
        self._seconds_per_shape = {}

    def seconds(self, gemms: list[Gemm]) -> float:
        return sum(gemm.count * self._seconds_of_one(gemm.m, gemm.k, gemm.n) for gemm in gemms)

    def _seconds_of_one(self, m: int, k: int, n: int) -> float:
        key = (m, k, n)
        if key not in self._seconds_per_shape:
            gemm = make_gemm(m, k, n, self.dtype, self.device)
            timer = Timer(stmt="gemm()", globals={"gemm": gemm}, num_threads=self.threads)
            measurement = timer.blocked_autorange(min_run_time=self.min_run_time)
            # The fastest block, not the median: this is a bound, and a block slowed by other
            # load on the machine (multiplied by seq_len for per-step shapes) would loosen it.
            self._seconds_per_shape[key] = min(measurement.times)
        return self._seconds_per_shape[key]
