"""GPU tests of the CUDA kernels (csrc/kernels/, csrc/cuda/). Every test skips without a GPU.

Oracles: torch.nn on the same GPU (cuDNN), rnnkernels' own CPU path (the same step loops over
the CPU backend), and rnnkernels.reference in float64. Covered: the operators against the CPU
path and the reference; the modules, cells and PackedSequence input against torch.nn; float64
gradcheck of every operator; float16/bfloat16 error at most 2x torch.nn's own; torch.library
opcheck; capture in a CUDA graph; and, with RNNKERNELS_SLOW=1, a step of more than 2^31 elements.
"""

import copy
import os

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkernels  # noqa: F401  (importing it registers the operators and their autograd)
from rnnkernels import reference

ops = torch.ops.rnnkernels
CUDA = torch.device("cuda")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
slow = pytest.mark.skipif(
    os.environ.get("RNNKERNELS_SLOW") != "1", reason="slow: set RNNKERNELS_SLOW=1 to run"
)

# "lstm_proj" is an LSTM with a projection (proj_size, the w_hr argument).
GATES = {"lstm": 4, "lstm_proj": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
CELLS = list(GATES)

# float64: both sides round at 1.1e-16 and differ only in summation order (cuBLAS vs MKL vs
# cuDNN GEMMs), ~1e-15 after the short chains here; 1e-10 is still far below any wrong formula.
# float32: the same in float32 (6e-8) gives a few 1e-7 on values of order 1-10; weight gradients
# sum tens of rows. 5e-5 leaves a wide margin while a wrong formula is off by more than 1e-2.
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=5e-5, atol=5e-5),
}


@pytest.fixture(autouse=True)
def _ieee_float32():
    """cuBLAS and cuDNN may compute float32 as TF32 (10-bit mantissa) when allowed; float32
    comparisons need IEEE float32 on both sides."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---------------------------------------------------------------------------------------------
# Operator helpers


def layer_args(cell, batch_sizes, input_size, hidden_size, dtype, device, proj_size=2, seed=0):
    """Random arguments of one layer operator, as a dict in the operator's argument order (None
    for an absent w_hr). Weights ~ N(0, 1/H) keep the pre-activations O(1)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        values = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
        return values.to(device=device, dtype=dtype)

    gates, lstm = GATES[cell], cell.startswith("lstm")
    state = proj_size if cell == "lstm_proj" else hidden_size
    scale = hidden_size**-0.5
    args = {
        "input": randn(sum(batch_sizes), input_size),
        "batch_sizes": torch.tensor(batch_sizes, dtype=torch.int64),  # on the CPU, always
        "h0": randn(batch_sizes[0], state, scale=0.5),
    }
    if lstm:
        args["c0"] = randn(batch_sizes[0], hidden_size, scale=0.5)
    args["w_ih"] = randn(gates * hidden_size, input_size, scale=scale)
    args["w_hh"] = randn(gates * hidden_size, state, scale=scale)
    args["b_ih"] = randn(gates * hidden_size, scale=0.5)
    args["b_hh"] = randn(gates * hidden_size, scale=0.5)
    if lstm:
        args["w_hr"] = randn(state, hidden_size, scale=scale) if cell == "lstm_proj" else None
    return args


def differentiable(args):
    return [name for name, value in args.items() if name != "batch_sizes" and value is not None]


def operator_and_args(cell, args, reverse, train):
    """The forward operator of ``cell`` and its positional arguments."""
    tensors = list(args.values())
    if cell.startswith("lstm"):
        return ops.lstm_layer, (*tensors, reverse, train)
    if cell == "gru":
        return ops.gru_layer, (*tensors, reverse, train)
    return ops.rnn_layer, (*tensors, cell[len("rnn_"):], reverse, train)


def run_layer(cell, args, reverse, train=True):
    """The forward operator's outputs, without reserve."""
    op, op_args = operator_and_args(cell, args, reverse, train)
    return op(*op_args)[:-1]


def run_reference(cell, args, reverse):
    tensors = list(args.values())
    if cell.startswith("lstm"):
        return reference.lstm_layer(*tensors, reverse)
    if cell == "gru":
        return reference.gru_layer(*tensors, reverse)
    return reference.rnn_layer(*tensors, cell[len("rnn_"):], reverse)


def output_weights(tensors):
    """Fixed random weights for a loss sum((t * w).sum()): the same for every run of a test."""
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t) for t in tensors]


def outputs_and_grads(forward, args):
    """``forward(args)``'s outputs and the gradients of every differentiable argument for the
    loss weighted by ``output_weights``: name -> tensor."""
    names = differentiable(args)
    args = {k: v.detach().requires_grad_() if k in names else v for k, v in args.items()}
    outputs = forward(args)
    grads = torch.autograd.grad(outputs, [args[n] for n in names], output_weights(outputs))
    result = {f"output {i}": o.detach() for i, o in enumerate(outputs)}
    result.update({f"grad {n}": g for n, g in zip(names, grads)})
    return result


def to(args, **kwargs):
    return {k: v if v is None or k == "batch_sizes" else v.to(**kwargs) for k, v in args.items()}


# ---------------------------------------------------------------------------------------------
# Operators


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "batch_sizes", [(4, 3, 3, 1), (3, 3, 3), (1,)], ids=["varying", "padded", "one_step"]
)
@pytest.mark.parametrize(
    # Sizes of 1, primes, and a hidden size past a warp (33) so a row spans two warps.
    "input_size, hidden_size", [(1, 1), (7, 13), (19, 33)], ids=["I1H1", "I7H13", "I19H33"]
)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_operator_matches_cpu_path_and_reference(cell, reverse, input_size, hidden_size,
                                                 batch_sizes, dtype):
    cpu_args = layer_args(cell, batch_sizes, input_size, hidden_size, dtype, "cpu")
    got = outputs_and_grads(lambda a: run_layer(cell, a, reverse), to(cpu_args, device=CUDA))
    cpu = outputs_and_grads(lambda a: run_layer(cell, a, reverse), cpu_args)
    oracle = outputs_and_grads(lambda a: run_reference(cell, a, reverse),
                               to(cpu_args, dtype=torch.float64))
    assert got.keys() == cpu.keys() == oracle.keys()
    for key, value in got.items():
        assert value.device.type == CUDA.type and value.dtype == dtype, key
        torch.testing.assert_close(value.cpu(), cpu[key], **TOL[dtype],
                                   msg=lambda m: f"{key} against the CPU path: {m}")
        torch.testing.assert_close(value.cpu(), oracle[key].to(dtype), **TOL[dtype],
                                   msg=lambda m: f"{key} against the reference: {m}")


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_inference_matches_training(cell, reverse):
    """train=False takes the kernels' no-reserve branch: same outputs, empty reserve."""
    args = layer_args(cell, (4, 3, 3, 1), 3, 5, torch.float32, CUDA)
    op, train_args = operator_and_args(cell, args, reverse, True)
    _, infer_args = operator_and_args(cell, args, reverse, False)
    trained, inferred = op(*train_args), op(*infer_args)
    assert inferred[-1].numel() == 0
    for a, b in zip(trained[:-1], inferred[:-1]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck(cell, reverse):
    args = layer_args(cell, (3, 2, 2, 1), 2, 3, torch.float64, CUDA)
    names = differentiable(args)

    def forward(*tensors):
        return run_layer(cell, dict(args, **dict(zip(names, tensors))), reverse)

    assert torch.autograd.gradcheck(forward, [args[n].requires_grad_() for n in names])


@pytest.mark.parametrize("cell", CELLS)
def test_opcheck(cell):
    """Schema, fake kernel and autograd registration hold for CUDA tensors too."""
    args = layer_args(cell, (3, 2, 2, 1), 2, 3, torch.float32, CUDA)
    for name in differentiable(args):
        args[name].requires_grad_()
    torch.library.opcheck(*operator_and_args(cell, args, True, True))


@pytest.mark.parametrize("cell", CELLS)
def test_cuda_graph_capture(cell):
    """Forward and backward operators record into a CUDA graph and replay to the eager results.
    Capture fails on any host synchronisation and on any launch outside the current stream, so
    this also checks that the kernels launch on the current stream and never synchronise."""
    args = layer_args(cell, (4, 3, 3, 1), 3, 5, torch.float32, CUDA)
    names = differentiable(args)

    def forward_backward():
        leaves = {k: v.detach().requires_grad_() if k in names else v for k, v in args.items()}
        outputs = run_layer(cell, leaves, reverse=True)
        grads = torch.autograd.grad(outputs, [leaves[n] for n in names], weights)
        return [o.detach() for o in outputs] + list(grads)

    weights = output_weights(run_layer(cell, args, reverse=True))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        # Warm-up outside the capture: cuBLAS creates its handle and workspace on first use.
        eager = forward_backward()
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = forward_backward()
    graph.replay()
    torch.cuda.synchronize()
    # Not bitwise: cuBLAS may pick other GEMM algorithms on the capture stream.
    for a, b in zip(captured, eager):
        torch.testing.assert_close(a, b, **TOL[torch.float32])


# ---------------------------------------------------------------------------------------------
# Modules and cells against torch.nn on the GPU (cuDNN)

MODULES = [
    pytest.param("LSTM", dict(num_layers=2, bidirectional=True), id="lstm"),
    pytest.param("LSTM", dict(proj_size=3, batch_first=True), id="lstm_proj"),
    pytest.param("GRU", dict(num_layers=2, bidirectional=True), id="gru"),
    pytest.param("RNN", dict(num_layers=2, nonlinearity="tanh"), id="rnn_tanh"),
    pytest.param("RNN", dict(bidirectional=True, nonlinearity="relu"), id="rnn_relu"),
]


def module_results(module, input, hx):
    """Outputs of ``module(input, hx)`` and the gradients of the input, the initial states and
    every parameter for a fixed weighting of the outputs: name -> tensor."""
    data = input.data if isinstance(input, PackedSequence) else input
    data = data.detach().requires_grad_()
    if isinstance(input, PackedSequence):
        input = PackedSequence(data, *input[1:])
    else:
        input = data
    states = [h.detach().requires_grad_() for h in (hx if isinstance(hx, tuple) else (hx,))]
    result = module(input, tuple(states) if isinstance(hx, tuple) else states[0])

    outputs = []

    def collect(value):
        if isinstance(value, PackedSequence):
            outputs.append(value.data)
        elif isinstance(value, tuple):
            for item in value:
                collect(item)
        else:
            outputs.append(value)

    collect(result)
    params = dict(module.named_parameters())
    leaves = [data, *states, *params.values()]
    grads = torch.autograd.grad(outputs, leaves, output_weights(outputs))
    names = ["input"] + [f"state {i}" for i in range(len(states))] + list(params)
    named = {f"output {i}": o.detach() for i, o in enumerate(outputs)}
    named.update({f"grad {n}": g for n, g in zip(names, grads)})
    return named


def initial_states(name, module, batch, dtype):
    directions = 2 if module.bidirectional else 1
    layers = module.num_layers * directions
    state = module.proj_size if name == "LSTM" and module.proj_size else module.hidden_size
    h0 = torch.randn(layers, batch, state, dtype=torch.float64).to(device=CUDA, dtype=dtype)
    if name != "LSTM":
        return h0
    c0 = torch.randn(layers, batch, module.hidden_size, dtype=torch.float64)
    return h0, c0.to(device=CUDA, dtype=dtype)


def assert_results_close(got, want, tol):
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], **tol, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name, kwargs", MODULES)
def test_module_matches_torch_nn(name, kwargs, dtype, make_pair):
    theirs, ours = make_pair(name, 6, 8, **kwargs)
    theirs, ours = theirs.to(CUDA, dtype), ours.to(CUDA, dtype)
    steps, batch = 7, 5
    shape = (batch, steps, 6) if theirs.batch_first else (steps, batch, 6)
    x = torch.randn(*shape, dtype=torch.float64).to(CUDA, dtype)
    hx = initial_states(name, theirs, batch, dtype)
    assert_results_close(module_results(ours, x, hx), module_results(theirs, x, hx), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name, kwargs", MODULES)
def test_module_matches_own_cpu_path(name, kwargs, dtype, make_pair):
    _, ours = make_pair(name, 6, 8, **kwargs)
    ours_cpu, ours_cuda = ours.to(dtype=dtype), copy.deepcopy(ours).to(CUDA, dtype)
    shape = (5, 7, 6) if ours.batch_first else (7, 5, 6)
    x = torch.randn(*shape, dtype=torch.float64).to(dtype)
    hx = initial_states(name, ours, 5, dtype)
    hx_cpu = tuple(h.cpu() for h in hx) if isinstance(hx, tuple) else hx.cpu()
    got = {k: v.cpu() for k, v in module_results(ours_cuda, x.to(CUDA), hx).items()}
    assert_results_close(got, module_results(ours_cpu, x, hx_cpu), TOL[dtype])


@pytest.mark.parametrize("name, kwargs", MODULES)
def test_packed_sequence_matches_torch_nn(name, kwargs, make_pair):
    """Unsorted lengths, so sequences leave (and, in reverse, join) at different steps and the
    states are permuted."""
    theirs, ours = make_pair(name, 6, 8, **kwargs)
    theirs, ours = theirs.to(CUDA, torch.float64), ours.to(CUDA, torch.float64)
    lengths = [5, 2, 7, 1, 5]
    shape = (5, 7, 6) if theirs.batch_first else (7, 5, 6)
    x = torch.randn(*shape, dtype=torch.float64, device=CUDA)
    packed = pack_padded_sequence(x, lengths, batch_first=theirs.batch_first,
                                  enforce_sorted=False)
    hx = initial_states(name, theirs, len(lengths), torch.float64)
    assert_results_close(module_results(ours, packed, hx), module_results(theirs, packed, hx),
                         TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name, kwargs", [
    pytest.param("LSTMCell", {}, id="lstm"),
    pytest.param("GRUCell", {}, id="gru"),
    pytest.param("RNNCell", dict(nonlinearity="tanh"), id="rnn_tanh"),
    pytest.param("RNNCell", dict(nonlinearity="relu"), id="rnn_relu"),
])
def test_cell_matches_torch_nn(name, kwargs, dtype, make_pair):
    theirs, ours = make_pair(name, 6, 8, **kwargs)
    theirs, ours = theirs.to(CUDA, dtype), ours.to(CUDA, dtype)
    x = torch.randn(5, 6, dtype=torch.float64).to(CUDA, dtype)
    h = torch.randn(5, 8, dtype=torch.float64).to(CUDA, dtype)
    hx = (h, torch.randn(5, 8, dtype=torch.float64).to(CUDA, dtype)) if name == "LSTMCell" else h
    assert_results_close(module_results(ours, x, hx), module_results(theirs, x, hx), TOL[dtype])


# ---------------------------------------------------------------------------------------------
# float16 and bfloat16: flash-attention's rule. The oracle is torch.nn in float64 on the very
# half-precision weights and inputs; our error may be at most twice torch.nn's own in the same
# dtype, per output and per gradient.
# Without the relu RNN: where a pre-activation lies within rounding of 0, half precision may put
# it on the other side of relu's kink than float64 does, and that one element's gradient is then
# off by its full size. Which implementation hits such an element is chance (run on the CPU, ours
# and torch.nn's each do for some seeds), so a max-error bound measures luck there.


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name, kwargs", [m for m in MODULES if m.id != "rnn_relu"])
def test_half_precision_error_at_most_twice_torch_nn(name, kwargs, dtype, make_pair):
    theirs, ours = make_pair(name, 32, 64, **kwargs)
    theirs, ours = theirs.to(CUDA, dtype), ours.to(CUDA, dtype)
    oracle = copy.deepcopy(theirs).double()
    steps, batch = 12, 8
    shape = (batch, steps, 32) if theirs.batch_first else (steps, batch, 32)
    x = torch.randn(*shape, dtype=torch.float64).to(CUDA, dtype)
    hx = initial_states(name, theirs, batch, dtype)
    hx64 = tuple(h.double() for h in hx) if isinstance(hx, tuple) else hx.double()

    want = module_results(oracle, x.double(), hx64)
    ours_result, theirs_result = module_results(ours, x, hx), module_results(theirs, x, hx)
    for key, exact in want.items():
        our_error = (ours_result[key].double() - exact).abs().max().item()
        their_error = (theirs_result[key].double() - exact).abs().max().item()
        # One rounding step at the tensor's magnitude: no result stored in `dtype` can do better,
        # so a tensor torch.nn happens to get (almost) exact does not demand the impossible.
        floor = torch.finfo(dtype).eps * exact.abs().max().item()
        assert our_error <= 2 * their_error + floor, (
            f"{key}: error {our_error:.3g} against float64, torch.nn's {their_error:.3g}"
        )


# ---------------------------------------------------------------------------------------------
# Beyond 32-bit indices: one step of batch * 4H > 2^31 elements, so the kernels' element and gate
# indices, the grid-stride loop past its grid cap, and the host-side row offsets all need 64 bits.
# Sequences are independent, so the first and the last (whose elements lie past 2^31) are checked
# against the reference run on those two sequences alone.


@slow
def test_lstm_step_past_2_pow_31_elements():
    batch, hidden, steps, input_size = 2**18 + 1, 2048, 2, 4
    assert batch * 4 * hidden > 2**31
    # float16 needs ~35 GiB here (the gate buffers are [rows, 4H] and [rows, 5H]).
    if torch.cuda.get_device_properties(CUDA).total_memory < 48 * 2**30:
        pytest.skip("needs a GPU with 48 GiB")
    dtype = torch.float16
    gen = torch.Generator(device=CUDA).manual_seed(0)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen, device=CUDA, dtype=dtype) * scale

    scale = hidden**-0.5
    x = randn(steps * batch, input_size).requires_grad_()
    h0 = randn(batch, hidden, scale=0.5).requires_grad_()
    c0 = randn(batch, hidden, scale=0.5).requires_grad_()
    w_ih, w_hh = randn(4 * hidden, input_size, scale=scale), randn(4 * hidden, hidden, scale=scale)
    b_ih, b_hh = randn(4 * hidden, scale=0.5), randn(4 * hidden, scale=0.5)
    batch_sizes = torch.full((steps,), batch, dtype=torch.int64)

    output, h_n, c_n, _ = ops.lstm_layer(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, None,
                                         False, True)
    grad_output = randn(*output.shape)
    grad_x, grad_h0, grad_c0 = torch.autograd.grad(output, [x, h0, c0], grad_output)

    def rows(t, width):
        """The rows of sequences 0 and batch - 1 of a [steps * batch, width] tensor."""
        return t.detach().view(steps, batch, width)[:, [0, batch - 1]].reshape(-1, width).double()

    picked = [0, batch - 1]
    small = {
        "input": rows(x, input_size).requires_grad_(),
        "h0": h0.detach()[picked].double().requires_grad_(),
        "c0": c0.detach()[picked].double().requires_grad_(),
    }
    want_out, want_h, want_c = reference.lstm_layer(
        small["input"], torch.full((steps,), 2, dtype=torch.int64), small["h0"], small["c0"],
        w_ih.double(), w_hh.double(), b_ih.double(), b_hh.double(), None, False,
    )
    want_grads = torch.autograd.grad(want_out, list(small.values()), rows(grad_output, hidden))
    # float16 rounding leaves ~1e-3 on these O(1) values; an indexing error gives O(1) errors.
    tol = dict(rtol=3e-2, atol=3e-2)
    checks = {
        "output": (rows(output, hidden), want_out),
        "h_n": (h_n.detach()[picked].double(), want_h),
        "c_n": (c_n.detach()[picked].double(), want_c),
        "grad input": (rows(grad_x, input_size), want_grads[0]),
        "grad h0": (grad_h0[picked].double(), want_grads[1]),
        "grad c0": (grad_c0[picked].double(), want_grads[2]),
    }
    for key, (got, want) in checks.items():
        torch.testing.assert_close(got, want.detach(), **tol, msg=lambda m: f"{key}: {m}")
