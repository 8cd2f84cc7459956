"""The floating-point work of a layer: its GEMMs, counted once here for every GFLOP/s figure.

Pointwise work (activations, gate products) and bias gradients are left out: they are a few
flops per element against the GEMMs' 2 * K per element.
"""

from collections import Counter
from dataclasses import dataclass

from bench.shapes import GATES, Shape


@dataclass(frozen=True)
class Gemm:
    """`count` products of an [m, k] by a [k, n] matrix. `weight`: the [k, n] one is a weight, the
    same in every product; else it is data. `transposed_a`: the [m, k] one is the transpose of
    the layer's [k, m] gate gradients (the weight gradients)."""

    m: int
    k: int
    n: int
    count: int
    weight: bool = True
    transposed_a: bool = False

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


def layer_flops(kind: str, shape: Shape, training: bool) -> int:
    return sum(gemm.flops for gemm in layer_gemms(kind, shape, training))


def layer_gemms(kind: str, shape: Shape, training: bool) -> list[Gemm]:
    """The GEMMs of a forward (and, when training, backward) pass through the whole stack."""
    gemms = []
    for layer in range(shape.layers):
        layer_input = shape.input_size if layer == 0 else shape.hidden_size * shape.directions
        for _ in range(shape.directions):
            gemms += direction_gemms(kind, shape, layer_input, training)
    return gemms


def direction_gemms(kind: str, shape: Shape, layer_input: int, training: bool) -> list[Gemm]:
    """The GEMMs of one direction of one layer (the haste / cuDNN algorithm). A packed batch
    has fewer rows at the later steps, where its shorter sequences have ended."""
    hidden = shape.hidden_size
    batch_sizes = shape.batch_sizes()
    rows = sum(batch_sizes)
    gates = GATES[kind] * hidden
    per_step = Counter(batch_sizes)  # batch size -> steps with it
    forward = [Gemm(rows, layer_input, gates, 1)]  # input projection of all steps: x W_ih^T
    forward += [Gemm(batch, hidden, gates, steps) for batch, steps in per_step.items()]  # h W_hh^T
    if not training:
        return forward
    # Per step: dgates W_hh -> dh_{t-1}.
    backward = [Gemm(batch, gates, hidden, steps) for batch, steps in per_step.items()]
    backward += [
        Gemm(gates, rows, hidden, 1, weight=False, transposed_a=True),  # dW_hh = dgates^T h
        Gemm(gates, rows, layer_input, 1, weight=False, transposed_a=True),  # dW_ih = dgates^T x
        Gemm(rows, gates, layer_input, 1),  # dx = dgates W_ih (the benchmark's input needs grad)
    ]
    return forward + backward
