"""rnnkernels inside the PyTorch ecosystem: torch.compile and torch.export of a model holding our
layers, autocast (torch.nn's cast policy, low-precision kernels), DistributedDataParallel,
checkpoints (torch.save/torch.load, to and from torch.nn), several Python threads at once, and
bitwise run-to-run determinism on the CPU.

Module-level parity with torch.nn, copies/pickling and the compile test of single modules live in
test_modules.py; these tests use whole (tiny) models instead.
"""

import contextlib
import datetime
import os
import socket
import threading
import time
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkernels

f32, f64, bf16, f16 = torch.float32, torch.float64, torch.bfloat16, torch.float16
VOCAB, EMBED = 11, 5


class Tagger(nn.Module):
    """A sequence tagger: embedding -> bidirectional projected LSTM -> GRU -> linear, built from
    ``layers`` (the ``rnnkernels`` or the ``torch.nn`` namespace)."""

    def __init__(self, layers=rnnkernels, dtype=None):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED, dtype=dtype)
        self.lstm = layers.LSTM(EMBED, 6, batch_first=True, bidirectional=True, proj_size=3,
                                dtype=dtype)
        self.gru = layers.GRU(6, 4, batch_first=True, dtype=dtype)
        self.head = nn.Linear(4, 3, dtype=dtype)

    def forward(self, tokens):
        """tokens ``[B, T]`` -> (scores ``[B, T, 3]``, GRU final state ``[1, B, 4]``)."""
        features, _ = self.lstm(self.embed(tokens))
        features, h_n = self.gru(features)
        return self.head(features), h_n


def _tagger_pair(seed=0, dtype=None):
    """(torch.nn Tagger, rnnkernels Tagger) with the same parameters."""
    torch.manual_seed(seed)
    reference = Tagger(nn, dtype=dtype)
    ours = Tagger(rnnkernels, dtype=dtype)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _tokens(batch, steps, seed=1):
    return torch.randint(0, VOCAB, (batch, steps), generator=torch.Generator().manual_seed(seed))


def _flatten(result):
    """The tensors of a (nested) module result, in order; PackedSequences by their data."""
    if isinstance(result, PackedSequence):
        return [result.data]
    if isinstance(result, (tuple, list)):
        return [t for item in result for t in _flatten(item)]
    return [result]


def _loss(result, seed=2):
    """A scalar that weighs every element of every result differently (a plain sum would hide
    permuted elements), computed in float64 whatever the results' dtypes."""
    gen = torch.Generator().manual_seed(seed)
    return sum((t.double() * torch.randn(t.shape, generator=gen, dtype=f64).to(t.device)).sum()
               for t in _flatten(result))


def _grads(model, result, *inputs):
    """Gradients of ``_loss(result)`` with respect to ``inputs`` and every parameter."""
    leaves = [*inputs, *model.parameters()]
    return torch.autograd.grad(_loss(result), leaves, allow_unused=True, materialize_grads=True)


# ---------------------------------------------------------------------------------------------
# torch.compile and torch.export


def test_compiled_model_matches_eager(assert_close):
    """With torch._dynamo.config.allow_rnn set (our layers are instances of torch.nn's, which
    Dynamo otherwise refuses to trace), torch.compile(fullgraph=True) with the default (inductor)
    backend traces a whole model around our LSTM and GRU without a graph break (fullgraph raises
    on one) and gives the eager forward and gradients."""
    _, model = _tagger_pair()
    tokens = _tokens(2, 7)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(model, fullgraph=True)
        expected, actual = model(tokens), compiled(tokens)
    assert_close(actual, expected)
    assert_close(_grads(model, actual), _grads(model, expected))


def test_compiled_without_allow_rnn_breaks_around_the_layers(assert_close):
    """Without allow_rnn, Dynamo graph-breaks around our layers as around torch.nn's: a default
    torch.compile of the model still runs and gives the eager results and gradients, and with
    fullgraph=True it raises as it would for torch.nn's layers."""
    reference, model = _tagger_pair()
    tokens = _tokens(2, 7)
    explanations = []
    for tagger in (reference, model):
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(tagger)(tokens)
        explanations.append((explanation.graph_count, explanation.graph_break_count))
    assert explanations[1] == explanations[0]
    torch._dynamo.reset()
    compiled = torch.compile(model)
    expected, actual = model(tokens), compiled(tokens)
    assert_close(actual, expected)
    assert_close(_grads(model, actual), _grads(model, expected))
    torch._dynamo.reset()
    with pytest.raises(Exception, match="allow_rnn"):
        torch.compile(model, fullgraph=True)(tokens)


def test_compiled_under_autocast_matches_eager():
    """The autocast casts trace as well: under torch.autocast a compiled model gives the eager
    autocast results, dtypes included (aot_eager: the casts are what is tested, not inductor)."""
    _, model = _tagger_pair()
    tokens = _tokens(2, 7)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.autocast("cpu", dtype=bf16), torch._dynamo.config.patch(allow_rnn=True):
        expected, actual = model(tokens), compiled(tokens)
    assert [t.dtype for t in _flatten(actual)] == [t.dtype for t in _flatten(expected)]
    for got, want in zip(_flatten(actual), _flatten(expected)):
        assert torch.equal(got, want)


def test_exported_program_matches_eager(assert_close):
    """torch.export.export of a model with our LSTM and GRU, with a dynamic batch and sequence
    length: the exported program holds our (multi-layer) operators, runs, and matches eager on the
    traced shape and on another one."""
    _, model = _tagger_pair()
    batch, steps = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("steps", min=2,
                                                                               max=64)
    with warnings.catch_warnings():
        # torch.nn's RNNs reassign _flat_weights in forward, which export warns about (for
        # torch.nn.LSTM as much as for ours).
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        program = torch.export.export(model, (_tokens(2, 7),),
                                      dynamic_shapes={"tokens": {0: batch, 1: steps}})
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {"rnnkernels.lstm.default", "rnnkernels.gru.default"} <= targets
    exported = program.module()
    for shape in ((2, 7), (5, 3)):
        tokens = _tokens(*shape)
        assert_close(exported(tokens), model(tokens))


# ---------------------------------------------------------------------------------------------
# Autocast. torch.nn's modules have no autocast rule of their own on the CPU: autocast casts the
# GEMMs (linear) to bfloat16, and the pointwise updates promote with the states, so the result
# dtypes depend on the module (see functional.autocast_state_dtype). Ours must give the same
# dtypes, with errors (against float64) at most twice torch.nn's own autocast errors
# (flash-attention's rule), and float32 gradients for float32 parameters, as torch.nn's.

AUTOCAST_MODULES = [
    pytest.param("LSTM", dict(num_layers=2, bidirectional=True), id="LSTM-L2-bidir"),
    pytest.param("LSTM", dict(proj_size=3, batch_first=True), id="LSTM-proj3-batch_first"),
    pytest.param("GRU", dict(num_layers=2, bidirectional=True), id="GRU-L2-bidir"),
    pytest.param("RNN", {}, id="RNN-tanh"),
    pytest.param("RNN", dict(nonlinearity="relu", bias=False), id="RNN-relu-nobias"),
    pytest.param("LSTMCell", {}, id="LSTMCell"),
    pytest.param("GRUCell", {}, id="GRUCell"),
    pytest.param("RNNCell", dict(nonlinearity="relu"), id="RNNCell-relu"),
]
# (input dtype, initial state dtype or None for the default zeros): the state's dtype decides
# whether torch.nn's GRU/cell results stay float32.
AUTOCAST_INPUTS = [
    pytest.param(f32, None, id="x_f32-hx_none"),
    pytest.param(f32, f32, id="x_f32-hx_f32"),
    pytest.param(f32, bf16, id="x_f32-hx_bf16"),
    pytest.param(bf16, None, id="x_bf16-hx_none"),
    pytest.param(bf16, f32, id="x_bf16-hx_f32"),
]
INPUT_SIZE, HIDDEN_SIZE, STEPS, BATCH = 5, 7, 6, 3


def _autocast_inputs(name, kwargs, input_dtype, state_dtype):
    """(input, hx) for a module built as ``name(INPUT_SIZE, HIDDEN_SIZE, **kwargs)``: float64
    values (rounded to ``input_dtype``/``state_dtype``) that require grad."""
    gen = torch.Generator().manual_seed(3)
    cell = name.endswith("Cell")
    if cell:
        shape = (BATCH, INPUT_SIZE)
    elif kwargs.get("batch_first"):
        shape = (BATCH, STEPS, INPUT_SIZE)
    else:
        shape = (STEPS, BATCH, INPUT_SIZE)
    x = torch.randn(shape, generator=gen, dtype=f64).to(input_dtype).requires_grad_()
    hx = None
    if state_dtype is not None:
        layers = 1 if cell else kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional")
                                                                else 1)
        lead = (BATCH,) if cell else (layers, BATCH)
        widths = [kwargs.get("proj_size") or HIDDEN_SIZE]
        if name.startswith("LSTM"):
            widths.append(HIDDEN_SIZE)
        states = [(torch.randn(*lead, w, generator=gen, dtype=f64) * 0.5).to(state_dtype)
                  .requires_grad_() for w in widths]
        hx = tuple(states) if name.startswith("LSTM") else states[0]
    return x, hx


def _state_leaves(hx):
    return [] if hx is None else list(hx) if isinstance(hx, tuple) else [hx]


def _float64_leaves(x, hx):
    """float64 copies of ``x`` and ``hx`` (None, a tensor or a tuple) that require grad."""
    def leaf(t):
        return t.detach().double().requires_grad_()

    if hx is not None:
        hx = tuple(leaf(s) for s in hx) if isinstance(hx, tuple) else leaf(hx)
    return leaf(x), hx


def _run_with_grads(module, x, hx, autocast_dtype=None, device_type="cpu", form="padded"):
    """(results, gradients of _loss w.r.t. x, the initial states and the parameters), the
    forward run under autocast to ``autocast_dtype`` (None: autocast off). ``form``: "padded",
    "packed" (the sequences of ``x`` packed with lengths STEPS, STEPS - 2, 1) or "onednn_off"
    (padded, with torch.backends.mkldnn disabled, which changes torch.nn's CPU LSTM path)."""
    input = x
    if form == "packed":
        input = pack_padded_sequence(x, [STEPS, STEPS - 2, 1], enforce_sorted=False,
                                     batch_first=getattr(module, "batch_first", False))
    onednn_off = (torch.backends.mkldnn.flags(enabled=False) if form == "onednn_off"
                  else contextlib.nullcontext())
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        with onednn_off:
            result = module(input, hx)
    return _flatten(result), _grads(module, result, x, *_state_leaves(hx))


def _float64_twin(module):
    """A float64 copy of ``module``, on its device."""
    twin = type(module)(module.input_size, module.hidden_size, **_constructor_kwargs(module),
                        device=module.weight_ih_l0.device if isinstance(module, nn.RNNBase)
                        else module.weight_ih.device, dtype=f64)
    twin.load_state_dict(module.state_dict())
    return twin


def _constructor_kwargs(module):
    if isinstance(module, nn.RNNBase):
        kwargs = dict(num_layers=module.num_layers, bias=module.bias,
                      batch_first=module.batch_first, bidirectional=module.bidirectional)
        if module.mode == "LSTM":
            kwargs["proj_size"] = module.proj_size
    else:
        kwargs = dict(bias=module.bias)
    if hasattr(module, "nonlinearity"):
        kwargs["nonlinearity"] = module.nonlinearity
    return kwargs


def _max_error(got, want):
    return max((g.double() - w).abs().max().item() for g, w in zip(got, want))


def _assert_within_twice_torch_error(ours, theirs, exact, what):
    """flash-attention's rule for low precision: our error against the float64 results at most
    twice torch.nn's own, plus one bfloat16 rounding of the largest value (the sizes are tiny,
    so torch.nn's error can be small by luck)."""
    ours_error, torch_error = _max_error(ours, exact), _max_error(theirs, exact)
    largest = max(t.abs().max().item() for t in exact)
    bound = 2 * torch_error + largest * 2**-8
    assert ours_error <= bound, f"{what}: error {ours_error:.3g}, torch.nn's {torch_error:.3g}"


def _autocast_case(name, kwargs, input_dtype, state_dtype, form):
    torch.manual_seed(0)
    reference = getattr(nn, name)(INPUT_SIZE, HIDDEN_SIZE, **kwargs)
    ours = getattr(rnnkernels, name)(INPUT_SIZE, HIDDEN_SIZE, **kwargs)
    ours.load_state_dict(reference.state_dict())
    x, hx = _autocast_inputs(name, kwargs, input_dtype, state_dtype)

    try:
        their_results, their_grads = _run_with_grads(reference, x, hx, bf16, form=form)
    except RuntimeError as error:
        # torch.nn's LSTM hands bfloat16 to oneDNN's RNN without asking whether this CPU has a
        # bfloat16 RNN kernel (none without AVX-512): then there is nothing to compare with.
        if "could not create a primitive descriptor" not in str(error):
            raise
        pytest.skip(f"torch.nn's own {name} fails under bfloat16 autocast on this CPU: {error}")
    our_results, our_grads = _run_with_grads(ours, x, hx, bf16, form=form)
    assert [t.dtype for t in our_results] == [t.dtype for t in their_results]
    assert [g.dtype for g in our_grads] == [g.dtype for g in their_grads]
    assert all(p.dtype == f32 for p in ours.parameters())  # autocast casts copies, not weights

    # The float64 truth: the same module in float64 on the very same (rounded) values.
    exact_results, exact_grads = _run_with_grads(_float64_twin(ours), *_float64_leaves(x, hx),
                                                 form=form)
    _assert_within_twice_torch_error(our_results, their_results, exact_results, "results")
    _assert_within_twice_torch_error(our_grads, their_grads, exact_grads, "gradients")


@pytest.mark.parametrize("input_dtype, state_dtype", AUTOCAST_INPUTS)
@pytest.mark.parametrize("name, kwargs", AUTOCAST_MODULES)
def test_autocast_follows_torch_nn(name, kwargs, input_dtype, state_dtype):
    _autocast_case(name, kwargs, input_dtype, state_dtype, "padded")


# torch.backends.mkldnn.flags() warns about TF32 on Intel GPUs whenever it is entered.
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
@pytest.mark.parametrize("input_dtype, state_dtype", AUTOCAST_INPUTS[:2])
@pytest.mark.parametrize("form", ["packed", "onednn_off"])
@pytest.mark.parametrize("name, kwargs", [p for p in AUTOCAST_MODULES
                                          if not p.values[0].endswith("Cell")])
def test_autocast_follows_torch_nn_paths(name, kwargs, form, input_dtype, state_dtype):
    """torch.nn's CPU LSTM runs oneDNN's RNN (all bfloat16 under autocast) only for padded
    input with oneDNN enabled; packed, or with oneDNN off, its state keeps c0's dtype."""
    _autocast_case(name, kwargs, input_dtype, state_dtype, form)


def test_autocast_leaves_float64_alone(make_pair, assert_close):
    """Autocast casts no float64 tensor (as for torch.nn): a float64 module runs in float64."""
    reference, ours = make_pair("GRU", INPUT_SIZE, HIDDEN_SIZE, dtype=f64)
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=f64)
    with torch.autocast("cpu", dtype=bf16):
        expected, actual = reference(x), ours(x)
    assert_close(actual, expected)


def test_autocast_disabled_inside_runs_float32(make_pair, assert_close):
    reference, ours = make_pair("LSTM", INPUT_SIZE, HIDDEN_SIZE)
    x = torch.randn(STEPS, BATCH, INPUT_SIZE)
    with torch.autocast("cpu", dtype=bf16), torch.autocast("cpu", enabled=False):
        actual = ours(x)
    assert_close(actual, reference(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [pytest.param(f16, id="f16"), pytest.param(bf16, id="bf16")])
@pytest.mark.parametrize("name, kwargs", AUTOCAST_MODULES)
def test_cuda_autocast_runs_in_the_autocast_dtype(name, kwargs, dtype):
    """On CUDA torch.nn runs whole layers (cuDNN) and cells as autocast ops: every result comes
    out in the low-precision dtype, and so do ours. (torch.nn's cuDNN layers use float16 even
    under bfloat16 autocast, aten/src/ATen/cudnn/AutocastRNN.cpp; ours use the dtype asked for.)
    Errors against float64: at most twice those of torch.nn's run under float16 autocast."""
    torch.manual_seed(0)
    reference = getattr(nn, name)(INPUT_SIZE, HIDDEN_SIZE, **kwargs).cuda()
    ours = getattr(rnnkernels, name)(INPUT_SIZE, HIDDEN_SIZE, **kwargs).cuda()
    ours.load_state_dict(reference.state_dict())
    x, hx = _autocast_inputs(name, kwargs, f32, f32)
    x = x.detach().cuda().requires_grad_()
    if hx is not None:
        hx = (tuple(s.detach().cuda().requires_grad_() for s in hx) if isinstance(hx, tuple)
              else hx.detach().cuda().requires_grad_())
    our_results, our_grads = _run_with_grads(ours, x, hx, dtype, "cuda")
    assert all(t.dtype == dtype for t in our_results)
    assert all(g.dtype == f32 for g in our_grads)
    if dtype == f16:
        their_results, their_grads = _run_with_grads(reference, x, hx, dtype, "cuda")
        assert [t.dtype for t in our_results] == [t.dtype for t in their_results]
        exact_results, exact_grads = _run_with_grads(_float64_twin(ours),
                                                     *_float64_leaves(x, hx))
        _assert_within_twice_torch_error(our_results, their_results, exact_results, "results")
        _assert_within_twice_torch_error(our_grads, their_grads, exact_grads, "gradients")


# ---------------------------------------------------------------------------------------------
# DistributedDataParallel: two processes (gloo, loopback) on halves of a global batch end with
# the parameters of one process trained on the whole batch. float64, so that the only difference
# (the order in which the two halves' gradients are summed) stays far below the tolerance.

DDP_STEPS, DDP_BATCH, DDP_SEQ = 3, 4, 5
DDP_TIMEOUT_S = 120


def _ddp_batches():
    gen = torch.Generator().manual_seed(5)
    return [(torch.randint(0, VOCAB, (DDP_BATCH, DDP_SEQ), generator=gen),
             torch.randn(DDP_BATCH, DDP_SEQ, 3, generator=gen, dtype=f64))
            for _ in range(DDP_STEPS)]


def _train(model, batches, rank=0, world_size=1):
    """SGD with momentum over ``batches``, each process taking its contiguous share of every
    batch; the loss is a mean over the share, so DDP's gradient average is the full-batch
    mean."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    share = DDP_BATCH // world_size
    for tokens, targets in batches:
        rows = slice(rank * share, (rank + 1) * share)
        scores, _ = model(tokens[rows])
        loss = nn.functional.mse_loss(scores, targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _ddp_worker(rank, world_size, port, out_dir):
    torch.set_num_threads(1)  # two processes on a 2-core machine
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=DDP_TIMEOUT_S))
    try:
        # Rank 1 starts from other parameters: DDP must broadcast rank 0's.
        torch.manual_seed(0 if rank == 0 else 100 + rank)
        model = Tagger(dtype=f64)
        ddp = nn.parallel.DistributedDataParallel(model)
        _train(ddp, _ddp_batches(), rank, world_size)
        torch.save(model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_data_parallel_matches_single_process(tmp_path, monkeypatch, assert_close):
    world_size = 2
    if "GLOO_SOCKET_IFNAME" not in os.environ:
        # Loopback, whatever the host name resolves to (the workers inherit the environment).
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    context = mp.start_processes(_ddp_worker, args=(world_size, _free_port(), str(tmp_path)),
                                 nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + DDP_TIMEOUT_S
    try:
        while not context.join(timeout=1):
            assert time.monotonic() < deadline, "DDP training did not finish in time"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()

    torch.manual_seed(0)
    single = Tagger(dtype=f64)
    _train(single, _ddp_batches())
    for rank in range(world_size):
        trained = torch.load(tmp_path / f"rank{rank}.pt")
        assert_close(trained, single.state_dict())


# ---------------------------------------------------------------------------------------------
# Checkpoints. (deepcopy and pickling of single modules: test_modules.py.)


def test_whole_model_save_load_round_trip(tmp_path, assert_close):
    """torch.save of a whole model (pickled classes, weights_only=False to load) and of its
    state_dict (weights_only=True) give models that compute exactly what the original does."""
    _, model = _tagger_pair()
    tokens = _tokens(3, 4)
    torch.save(model, tmp_path / "model.pt")
    torch.save(model.state_dict(), tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert type(loaded.lstm) is rnnkernels.LSTM and type(loaded.gru) is rnnkernels.GRU
    fresh = Tagger()
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    expected = model(tokens)
    expected_grads = _grads(model, expected)
    for restored in (loaded, fresh):
        result = restored(tokens)
        for got, want in zip(_flatten(result), _flatten(expected)):
            assert torch.equal(got, want)
        assert_close(_grads(restored, result), expected_grads)


def test_checkpoint_moves_between_torch_nn_and_rnnkernels(tmp_path, assert_close):
    """A state_dict file saved from a torch.nn model loads strictly into the same model built
    with our layers, which then computes torch.nn's results; and back."""
    torch.manual_seed(0)
    theirs = Tagger(nn)
    torch.save(theirs.state_dict(), tmp_path / "torch_nn.pt")
    ours = Tagger(rnnkernels)
    ours.load_state_dict(torch.load(tmp_path / "torch_nn.pt", weights_only=True))
    tokens = _tokens(3, 4)
    assert_close(ours(tokens), theirs(tokens))

    with torch.no_grad():
        for parameter in ours.parameters():
            parameter.mul_(0.5)
    torch.save(ours.state_dict(), tmp_path / "rnnkernels.pt")
    back = Tagger(nn)
    back.load_state_dict(torch.load(tmp_path / "rnnkernels.pt", weights_only=True))
    assert_close(back(tokens), ours(tokens))


# ---------------------------------------------------------------------------------------------
# Threads and determinism


def _thread_jobs():
    """Four (module, input, hx) jobs of different kinds, big enough that the kernels split their
    work across the intra-op threads (rows and hidden chunks)."""
    torch.manual_seed(0)
    jobs = [
        (rnnkernels.LSTM(19, 33, num_layers=2, bidirectional=True), (13, 37, 19), None),
        (rnnkernels.GRU(19, 33, bidirectional=True), (13, 37, 19), None),
        (rnnkernels.RNN(19, 33, nonlinearity="relu"), (13, 37, 19), None),
        (rnnkernels.LSTM(19, 33, proj_size=17), (13, 37, 19), None),
    ]
    return [(module, torch.randn(shape, requires_grad=True), hx) for module, shape, hx in jobs]


def _forward_backward(module, x, hx, repeats):
    """``repeats`` forward+backward runs; the results and gradients of the last one."""
    for _ in range(repeats):
        result = module(x, hx)
        grads = _grads(module, result, x)
    return [t.detach() for t in _flatten(result)], grads


def test_threads_give_the_sequential_results():
    """Four Python threads running forward and backward on separate modules at once (the
    operators release the GIL) compute exactly what the same runs one after another compute."""
    jobs = _thread_jobs()
    repeats = 3
    sequential = [_forward_backward(*job, repeats) for job in jobs]

    results = [None] * len(jobs)
    errors = []
    start = threading.Barrier(len(jobs))

    def work(index):
        try:
            start.wait()
            results[index] = _forward_backward(*jobs[index], repeats)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    assert not errors, errors
    for index, (expected, actual) in enumerate(zip(sequential, results)):
        for got, want in zip([*actual[0], *actual[1]], [*expected[0], *expected[1]]):
            assert torch.equal(got, want), f"job {index}"


DETERMINISM_CASES = [
    pytest.param("LSTM", dict(num_layers=2, bidirectional=True, proj_size=11), id="LSTM-proj"),
    pytest.param("GRU", dict(num_layers=2, bidirectional=True), id="GRU"),
    pytest.param("RNN", dict(nonlinearity="tanh"), id="RNN-tanh"),
    pytest.param("LSTMCell", {}, id="LSTMCell"),
    pytest.param("GRUCell", {}, id="GRUCell"),
    pytest.param("RNNCell", dict(nonlinearity="relu"), id="RNNCell-relu"),
]


@pytest.mark.parametrize("dtype", [pytest.param(f32, id="f32"), pytest.param(bf16, id="bf16")])
@pytest.mark.parametrize("name, kwargs", DETERMINISM_CASES)
def test_repeated_runs_are_bitwise_identical(name, kwargs, dtype):
    """Same inputs, same outputs and gradients to the bit, run after run (CPU): the kernels'
    thread partitioning and GEMMs do not depend on timing. Packed variable-length batches for the
    layers, so that rows leave and join."""
    torch.manual_seed(0)
    module = getattr(rnnkernels, name)(19, 33, dtype=dtype, **kwargs)
    if name.endswith("Cell"):
        x = torch.randn(37, 19, dtype=dtype, requires_grad=True)

        def run():
            return module(x)
    else:
        x = torch.randn(13, 37, 19, dtype=dtype, requires_grad=True)
        lengths = torch.randint(1, 14, (37,))
        lengths[0] = 13

        def run():
            return module(pack_padded_sequence(x, lengths, enforce_sorted=False))
    first = None
    for _ in range(3):
        result = run()
        current = [t.detach() for t in _flatten(result)] + list(_grads(module, result, x))
        if first is None:
            first = current
        else:
            for got, want in zip(current, first):
                assert torch.equal(got, want)
