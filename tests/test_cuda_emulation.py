"""The CUDA kernels (csrc/kernels/*.cu) executed on the CPU: compiled as host C++ under the
project's CUDA emulation (tests/cuda_emulation/), behind the same step loops as the CPU path,
and compared with that path, forward and backward, for every cell, direction and dtype, with
grids capped below the work so that the kernels' grid-stride loops wrap.

Also the tests' own cell (tests/cuda_emulation/test_cells.h), which takes in one cell hooks the
library's cells take apart: a per-row input and a scalar (as lstm_ext), a reduction over the row
and params with gradients of their own (as the layer-normalised cells), no dense recurrence (as
IndRNN):
on the CPU driver and its recomputation for double backward against a PyTorch reference, and on
the emulated CUDA kernels against the CPU driver.

The emulated operators are torch.ops.rnnkernels_emulated.layer and layer_backward, with the
arguments of torch.ops.rnnkernels.layer and layer_backward; the tests' cell's CPU ones are
torch.ops.rnnkernels_test.*. Building them takes a minute or two the first time (torch's
extension cache keeps the build)."""

import os
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension

import rnnkernels  # noqa: F401  (importing it registers the CPU operators)

ROOT = Path(__file__).resolve().parents[1]
EMULATION = ROOT / "tests" / "cuda_emulation"

TEST_CELL = "centred_indrnn"
GATES = {"lstm": 4, "lstm_proj": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1, "indrnn_tanh": 1,
         "indrnn_relu": 1, "layernorm_lstm": 4, "layernorm_gru": 3, TEST_CELL: 1,
         "lstm_ext": 4, "lstm_ext_eval": 4, "gru_ext": 3, "gru_ext_eval": 3,
         "layernorm_lstm_zoneout": 4, "layernorm_lstm_zoneout_eval": 4,
         "layernorm_gru_zoneout": 3, "layernorm_gru_zoneout_eval": 3}
# The cells with the LSTM's and GRU's options (test_lstm_options.py), by case: in training with
# every mask, in eval with the zoneout probabilities instead.
EXTENDED = {"lstm_ext": "lstm_ext", "lstm_ext_eval": "lstm_ext", "gru_ext": "gru_ext",
            "gru_ext_eval": "gru_ext"}
# The cells without a dense recurrence: w_hh is u [H], one weight per unit.
ELEMENTWISE = {"indrnn_tanh", "indrnn_relu", TEST_CELL}
# The layer-normalised cells with zoneout, by case: in training with masks, in eval with the
# probabilities instead.
LAYER_NORM_ZONEOUT = {"layernorm_lstm_zoneout": "layernorm_lstm",
                      "layernorm_lstm_zoneout_eval": "layernorm_lstm",
                      "layernorm_gru_zoneout": "layernorm_gru",
                      "layernorm_gru_zoneout_eval": "layernorm_gru"}
# The layer-normalised cells' cases: the gains of both sides' norms [G*H], and for the LSTM c_t's
# norm's gain and shift [H].
LAYER_NORM = {"layernorm_lstm", "layernorm_gru", *LAYER_NORM_ZONEOUT}
SCALE = 0.9  # the tests' cell's scalar
DTYPES = {
    "f64": torch.float64,
    "f32": torch.float32,
    "f16": torch.float16,
    "bf16": torch.bfloat16,
}
# Both sides run the same math in the same order but for the activations (the CPU path's
# vectorised exp and tanh for float32 and float64, a few ulp from the C library's) and, for
# float32, the GEMMs (oneDNN against ATen's). float16 runs float math and ATen's GEMMs on both
# sides: equal but for a last-bit rounding here and there. Each bound is far below what a wrong
# index, gate or step makes.
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=5e-5, atol=5e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-3),
}
# bfloat16: the CPU path's activations are coarser float32 math, within 2e-4 before the rounding
# to 8 bits (csrc/cpu/pointwise_kernels.h), so now and then a stored value rounds to the other
# neighbour, and the recurrence and the gradients' sums carry that on. Measured over every case,
# elements differed by up to 1.7% of their result's largest magnitude, some by more than their
# own size where they are near 0. The bound: 2.5% of that magnitude, for every element.
BFLOAT16_TOL_OF_LARGEST = 2.5e-2
# The layer-normalised cells' float16 bound: their norms' sums run in another order on the two
# sides (the CPU driver's row in turn, a block's tree in shared memory), so a saved normalised
# value now and then rounds to the other neighbouring half, and one weight gradient element in
# thousands, summed through a GEMM, differs by a few ulps.
LAYER_NORM_TOL = {torch.float16: dict(rtol=5e-3, atol=5e-3)}
# 256 threads a block: one block covers 256 elements of a step, so a limit of one block makes the
# loop wrap at the sizes below (9 rows x 37 units at the first step); 0 is no limit.
GRID_LIMITS = {"grid1": 1, "full": 0}
BATCH_SIZES = (9, 9, 7, 2, 1)
INPUT, HIDDEN, PROJ = 11, 37, 13


@pytest.fixture(scope="module")
def emulated():
    """The emulated extension module (importing it registers torch.ops.rnnkernels_emulated and
    torch.ops.rnnkernels_test)."""
    build = Path(torch.utils.cpp_extension._get_build_directory("rnnkernels_emulated", False))
    # One host C++ file per kernel file: cpp_extension would hand a .cu to nvcc.
    wrappers = []
    for kernel in sorted((ROOT / "csrc" / "kernels").glob("*.cu")):
        wrapper = build / f"{kernel.stem}_cu.cpp"
        text = f'#include "{kernel}"\n'
        if not wrapper.exists() or wrapper.read_text() != text:
            wrapper.write_text(text)
        wrappers.append(str(wrapper))
    module = torch.utils.cpp_extension.load(
        name="rnnkernels_emulated",
        sources=[*(str(EMULATION / name) for name in
                   ("emulated_layers.cpp", "test_cells_cpu.cpp", "test_cells_cu.cpp")),
                 str(ROOT / "csrc" / "layer" / "layer_common.cpp"),
                 str(ROOT / "csrc" / "cpu" / "native_dot.cpp"),
                 str(ROOT / "csrc" / "cpu" / "buffer_pool.cpp"), *wrappers],
        extra_include_paths=[str(EMULATION / "include"), str(ROOT / "csrc"),
                             str(ROOT / "include")],
        extra_cflags=["-O2"],
        build_directory=str(build),
        verbose=os.environ.get("RNNKERNELS_VERBOSE_BUILD") == "1",
    )
    yield module
    module.set_grid_limit(0)


def make_args(cell, dtype):
    """The arguments of the layer operator for ``cell``: (name, input, batch_sizes, states,
    params, scalars); weights ~ N(0, 1/H) keep the gates away from saturation."""
    gen = torch.Generator().manual_seed(sum(map(ord, cell)))

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    gates, lstm = GATES[cell], cell.startswith("lstm")
    state = PROJ if cell == "lstm_proj" else HIDDEN
    rows, batch, scale = sum(BATCH_SIZES), BATCH_SIZES[0], HIDDEN**-0.5
    input = randn(rows, INPUT)
    states = [randn(batch, state, scale=0.5)]
    params = [randn(gates * HIDDEN, INPUT, scale=scale), randn(gates * HIDDEN, state, scale=scale),
              randn(gates * HIDDEN, scale=0.5), randn(gates * HIDDEN, scale=0.5)]
    scalars = []
    layer_norm_lstm = LAYER_NORM_ZONEOUT.get(cell, cell) == "layernorm_lstm"
    if lstm or layer_norm_lstm:
        states.append(randn(batch, HIDDEN, scale=0.5))
    if cell in ("lstm", "lstm_proj"):
        params.append(randn(state, HIDDEN, scale=scale) if cell == "lstm_proj" else None)
    if cell in LAYER_NORM:
        params += [1 + randn(gates * HIDDEN, scale=0.2), 1 + randn(gates * HIDDEN, scale=0.2)]
    if layer_norm_lstm:
        params += [1 + randn(HIDDEN, scale=0.2), randn(HIDDEN, scale=0.5)]
    if cell in LAYER_NORM_ZONEOUT:
        masks, scalars = zoneout_args(cell, (0.3, 0.4)[:len(states)], gen, dtype)
        params += masks
    elif cell in LAYER_NORM:  # zoneout off: no masks, probabilities 0
        params += [None] * len(states)
        scalars = [0.0] * len(states)
    if cell in ELEMENTWISE:
        params[1] = randn(HIDDEN, scale=0.5)
    if cell == TEST_CELL:
        # gain; a mask of zeros and ones, as zoneout's.
        mask = torch.rand(rows, HIDDEN, generator=gen, dtype=torch.float64) < 0.7
        params += [1 + randn(HIDDEN, scale=0.2), mask.to(dtype)]
        scalars = [SCALE]
    if cell in EXTENDED:
        own, scalars = extended_args(cell, randn, gen, dtype)
        params += own
    name = ("lstm" if cell in ("lstm", "lstm_proj")
            else EXTENDED.get(cell, LAYER_NORM_ZONEOUT.get(cell, cell)))
    return name, input, torch.tensor(BATCH_SIZES), states, params, scalars


def mask(rows, p, gen, dtype):
    """A [rows, HIDDEN] mask, 1 with probability p, else 0."""
    return (torch.rand(rows, HIDDEN, generator=gen, dtype=torch.float64) < p).to(dtype)


def zoneout_args(cell, zoneouts, gen, dtype):
    """Zoneout masks and scalars for the probabilities ``zoneouts`` (h, and an LSTM's c): in
    training masks of 0 and 1 and scalars 0, in eval (a case named ``*_eval``) no masks and the
    probabilities."""
    training = not cell.endswith("_eval")
    return ([mask(sum(BATCH_SIZES), p, gen, dtype) if training else None for p in zoneouts],
            [0.0 if training else p for p in zoneouts])


def extended_args(cell, randn, gen, dtype):
    """The own params and scalars of an extended cell's case: (LSTM) peepholes and a clip that
    some cell values pass, zoneout masks of 0 and 1 (h, and the LSTM's c) and a recurrent mask
    in training, the zoneout probabilities in eval."""
    training, lstm = not cell.endswith("_eval"), cell.startswith("lstm")
    params = [randn(3 * HIDDEN, scale=0.5)] if lstm else []
    masks, zoneout_scalars = zoneout_args(cell, (0.3, 0.4) if lstm else (0.3,), gen, dtype)
    params += masks
    params.append(mask(BATCH_SIZES[0], 0.75, gen, dtype) / 0.75 if training else None)
    scalars = [0.3] if lstm else []
    return params, scalars + zoneout_scalars


def output_grads(outputs):
    """Fixed random gradients for the forward's output and final states."""
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o in outputs]


def run(namespace, cell, dtype, reverse):
    """Forward (train=True) and backward of ``cell``'s layer in ``namespace``: the forward's
    output and final states, then the gradients of input, states and params, given fixed
    gradients of the output and final states."""
    ops = getattr(torch.ops, namespace)
    name, input, batch_sizes, states, params, scalars = make_args(cell, dtype)
    output, finals, reserve = ops.layer(name, input, batch_sizes, states, params, scalars,
                                        reverse, True)
    grad_output, *grad_finals = output_grads([output, *finals])
    grad_input, grad_states, grad_params = ops.layer_backward(
        name, grad_output, grad_finals, input, batch_sizes, states, params, scalars, output,
        reserve, reverse)
    return [output, *finals, grad_input, *grad_states, *grad_params]


@pytest.mark.parametrize("grid", GRID_LIMITS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", GATES)
def test_emulated_kernels_match_cpu(emulated, cell, reverse, dtype, grid):
    dtype = DTYPES[dtype]
    emulated.set_grid_limit(GRID_LIMITS[grid])
    got = run("rnnkernels_emulated", cell, dtype, reverse)
    want = run("rnnkernels_test" if cell == TEST_CELL else "rnnkernels", cell, dtype, reverse)
    assert len(got) == len(want)
    for index, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, index
        if dtype == torch.bfloat16:
            largest = w.abs().max().item() if w.numel() else 0.0
            tolerance = dict(rtol=0.0, atol=BFLOAT16_TOL_OF_LARGEST * largest)
        elif cell in LAYER_NORM:
            tolerance = LAYER_NORM_TOL.get(dtype, TOL[dtype])
        else:
            tolerance = TOL[dtype]
        torch.testing.assert_close(g, w, **tolerance, msg=lambda m: f"result {index}: {m}")


def reference_of_test_cell(input, batch_sizes, h0, w_ih, u, b_ih, b_hh, gain, mask, scale,
                           reverse):
    """The tests' cell (tests/cuda_emulation/test_cells.h) step by step in PyTorch: output and
    final h."""
    sizes = batch_sizes.tolist()
    offsets = [sum(sizes[:t]) for t in range(len(sizes))]
    order = reversed(range(len(sizes))) if reverse else range(len(sizes))
    h, outputs = h0, [None] * len(sizes)
    for t in order:
        rows, offset = sizes[t], offsets[t]
        h_prev, m = h[:rows], mask[offset:offset + rows]
        pre = input[offset:offset + rows] @ w_ih.t() + b_ih + b_hh + u * h_prev
        c = pre - pre.mean(1, keepdim=True)
        new = m * torch.tanh(scale * gain * c) + (1 - m) * h_prev
        h = torch.cat([new, h[rows:]])
        outputs[t] = new
    return torch.cat(outputs), h


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_test_cell_matches_its_reference(emulated, reverse):
    """The CPU driver's forward and backward, and the recomputation that double backward
    differentiates, against the reference in float64."""
    name, input, batch_sizes, states, params, scalars = make_args(TEST_CELL, torch.float64)
    output, finals, reserve = torch.ops.rnnkernels_test.layer(
        name, input, batch_sizes, states, params, scalars, reverse, True)
    leaves = [t.clone().requires_grad_() for t in [input, states[0], *params[:5]]]
    want = reference_of_test_cell(leaves[0], batch_sizes, leaves[1], *leaves[2:], params[5],
                                  SCALE, reverse)
    torch.testing.assert_close(output, want[0])
    torch.testing.assert_close(finals[0], want[1])

    grads = output_grads([output, *finals])
    grad_input, grad_states, grad_params = torch.ops.rnnkernels_test.layer_backward(
        name, grads[0], grads[1:], input, batch_sizes, states, params, scalars, output, reserve,
        reverse)
    expected = torch.autograd.grad(want, leaves, grads)
    for got, wanted in zip([grad_input, *grad_states, *grad_params[:5]], expected):
        torch.testing.assert_close(got, wanted)
    assert grad_params[5].numel() == 0  # the mask, a per-row input, has none

    recomputed = torch.ops.rnnkernels_test.differentiable_layer(
        name, leaves[0], batch_sizes, [leaves[1]], [*leaves[2:], params[5]], scalars, reverse)
    torch.testing.assert_close(recomputed[0], want[0])
    torch.testing.assert_close(recomputed[1][0], want[1])
    differentiated = torch.autograd.grad([recomputed[0], *recomputed[1]], leaves, grads)
    for got, wanted in zip(differentiated, expected):
        torch.testing.assert_close(got, wanted)
