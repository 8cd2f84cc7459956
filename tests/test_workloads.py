"""What real programs do to the layers beyond a single clean call: thousands of calls with new
packed lengths (memory must stay bounded), changing outputs in place before the backward,
changing a module's attributes after construction, mixed dtypes and non-contiguous parameters
that torch.nn's cells accept, and the precision of the activations near zero."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import rnnkernels

LAYER_NAMES = ["LSTM", "GRU", "RNN"]
CELL_NAMES = ["LSTMCell", "GRUCell", "RNNCell"]

# ---------------------------------------------------------------------------------------------
# Memory with varying lengths

# Runs `calls` forward and backward passes of an LSTM, each on a packed batch of a new total
# length, and prints the growth of resident memory after the first 50 calls, in MiB.
_GROWTH_SCRIPT = textwrap.dedent("""
    import sys, torch, rnnkernels
    from torch.nn.utils.rnn import pack_sequence
    def resident_mib():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    calls = int(sys.argv[1])
    torch.manual_seed(0)
    lstm = rnnkernels.LSTM(64, 64)
    for call in range(calls):
        total = 300 + call  # 64 sequences, a new packed row count every call
        lengths = [total // 64 + (1 if i < total % 64 else 0) for i in range(64)]
        out, _ = lstm(pack_sequence([torch.randn(n, 64) for n in lengths]))
        out.data.sum().backward()
        if call == 50:
            start = resident_mib()
    print(resident_mib() - start)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
def test_memory_stays_bounded_over_thousands_of_lengths():
    """2,000 calls, each with a packed length not seen before, in a fresh process: resident
    memory grows by less than 64 MiB after warm-up. (With a GEMM primitive kept per shape, as
    before, it grew about 0.4 MiB a call: some 800 MiB here.)"""
    result = subprocess.run([sys.executable, "-c", _GROWTH_SCRIPT, "2000"], check=True,
                            capture_output=True, text=True)
    growth = float(result.stdout.split()[-1])
    assert growth < 64, f"resident memory grew {growth:.0f} MiB"


# A forward and backward of each layer under saved-tensor hooks written in Python, on a batch the
# CPU splits across two threads, against torch.nn's under the same hooks; prints the largest
# difference of the results and of the gradients.
_SAVED_HOOKS_SCRIPT = textwrap.dedent("""
    import torch, rnnkernels
    torch.set_num_threads(2)
    packed = []
    def pack(t):
        packed.append(t.shape)
        return t
    def results(lib, name):
        torch.manual_seed(0)
        layer = getattr(lib, name)(32, 32, bidirectional=True)
        x = torch.randn(5, 8, 32, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            output = layer(x)[0]
        output.square().sum().backward()
        return [output, x.grad, *(p.grad for p in layer.parameters())]
    worst = 0.0
    for name in ("LSTM", "GRU", "RNN"):
        for a, b in zip(results(rnnkernels, name), results(torch.nn, name)):
            worst = max(worst, (a - b).abs().max().item())
    print(len(packed) > 0, worst)
""")


def test_saved_tensor_hooks_around_a_batch_split_across_threads():
    """Hooks in Python (as activation offloading, torch.autograd.graph.save_on_cpu, installs)
    around a layer whose batch the CPU splits across threads. The threads once copied the whole
    thread-local state, the hooks' Python objects included, which needs the GIL that the calling
    thread holds while it waits for them: a hang. In a process of its own, under a timeout."""
    result = subprocess.run([sys.executable, "-c", _SAVED_HOOKS_SCRIPT], check=True,
                            capture_output=True, text=True, timeout=300)
    hooked, worst = result.stdout.split()
    assert hooked == "True" and float(worst) < 1e-4


@pytest.mark.parametrize("capacity", ["0", "many", "-3"])
def test_invalid_primitive_cache_capacity_is_named(capacity):
    script = ("import torch, rnnkernels\n"
              "rnnkernels.GRU(256, 256)(torch.randn(20, 8, 256))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "RNNKERNELS_PRIMITIVE_CACHE_CAPACITY": capacity})
    if not rnnkernels._ops.BUILD_INFO["onednn"]:
        pytest.skip("only the oneDNN build caches primitives")
    assert result.returncode != 0
    assert "RNNKERNELS_PRIMITIVE_CACHE_CAPACITY" in result.stderr and capacity in result.stderr


def test_small_primitive_cache_gives_the_same_results():
    """A cache of one primitive (every GEMM evicts the last) changes nothing but speed."""
    script = textwrap.dedent("""
        import torch, rnnkernels
        torch.manual_seed(0)
        gru = rnnkernels.GRU(128, 128, num_layers=2)
        x = torch.randn(30, 16, 128, requires_grad=True)
        out, h = gru(x)
        (out.sum() + h.sum()).backward()
        torch.save([out, h, x.grad, *[p.grad for p in gru.parameters()]], "{path}")
    """)
    results = []
    for index, capacity in enumerate(["1", "1024"]):
        path = f"{os.environ.get('TMPDIR', '/tmp')}/rnnkernels-cache-{os.getpid()}-{index}.pt"
        subprocess.run([sys.executable, "-c", script.format(path=path)], check=True,
                       env={**os.environ, "RNNKERNELS_PRIMITIVE_CACHE_CAPACITY": capacity})
        results.append(torch.load(path))
        os.remove(path)
    for small, large in zip(*results):
        assert torch.equal(small, large)


# ---------------------------------------------------------------------------------------------
# The CPU buffer pool (csrc/cpu/buffer_pool.h)

def _pooled_lstm_results():
    """A training step of an LSTM whose buffers are pooled (2 MiB of gates): its results and
    gradients."""
    torch.manual_seed(0)
    lstm = rnnkernels.LSTM(128, 128)
    x = torch.randn(40, 32, 128, requires_grad=True)
    out, (h, c) = lstm(x)
    (out.square().sum() + h.sum() + c.sum()).backward()
    return [out, h, c, x.grad, *(p.grad for p in lstm.parameters())]


@pytest.mark.skipif(rnnkernels._C._pooled_free_bytes_limit() == 0,
                    reason="RNNKERNELS_CPU_BUFFER_CACHE_BYTES=0 keeps nothing")
def test_freed_buffers_return_to_the_pool_and_empty_cache_releases_them():
    rnnkernels.empty_cache()
    assert rnnkernels._C._pooled_free_bytes() == 0
    first = _pooled_lstm_results()
    kept = rnnkernels._C._pooled_free_bytes()
    assert kept >= 2 << 20  # the gates and their gradient, freed by the end of the step
    second = _pooled_lstm_results()
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    # The second step took its buffers from the pool instead of adding new ones: the pool holds
    # what it held after the first, within one output and one 2 MiB page of rounding.
    assert rnnkernels._C._pooled_free_bytes() <= kept + (first[0].nbytes + (2 << 20))
    del first, second
    rnnkernels.empty_cache()
    assert rnnkernels._C._pooled_free_bytes() == 0


def test_pooled_output_resizes_as_at_empty_s():
    """torch.nn's outputs are plain tensors, which resize_ can grow; ours too, with the values
    kept."""
    out = rnnkernels.GRU(256, 256)(torch.randn(30, 40, 256))[0].detach()
    assert out.nbytes >= 1 << 20
    before = out.clone()
    out.resize_(60, 40, 256)
    assert torch.equal(out[:30], before)
    out.resize_(2, 3, 4)
    assert torch.equal(out.flatten(), before.flatten()[:24])


def test_pooled_allocations_in_the_memory_profiler():
    """torch.profiler's memory view sees the pooled buffers as it sees torch's own."""
    lstm = rnnkernels.LSTM(256, 256)
    x = torch.randn(30, 40, 256)
    with torch.profiler.profile(profile_memory=True) as profiler:
        with torch.no_grad():
            out = lstm(x)[0]
    layer = [event for event in profiler.key_averages()
             if event.key == "rnnkernels::layer"]
    assert layer and layer[0].cpu_memory_usage >= out.nbytes


# A thread runs layers (taking and returning pooled buffers) while the main thread forks 30
# children, each of which runs a layer too and exits; prints how many children finished in time.
_FORK_SCRIPT = textwrap.dedent("""
    import os, threading, time, torch, rnnkernels
    torch.set_num_threads(1)
    gru = rnnkernels.GRU(256, 256)
    x = torch.randn(20, 32, 256)  # 2 MB of gates: pooled
    stop = False
    def busy():
        while not stop:
            gru(x)
    thread = threading.Thread(target=busy)
    thread.start()
    finished = 0
    for _ in range(30):
        time.sleep(0.01)
        child = os.fork()
        if child == 0:
            gru(x)
            os._exit(0)
        for _ in range(200):
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                finished += status == 0
                break
            time.sleep(0.05)
        else:
            os.kill(child, 9)
            os.waitpid(child, 0)
    stop = True
    thread.join()
    print(finished)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_can_use_the_pool():
    """A process forked while another thread held the pool's lock (a DataLoader's workers) would
    wait for it forever; fork takes the lock first, as glibc's malloc does its own."""
    result = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], check=True,
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.split()[-1] == "30"


# Under an address-space limit 512 MiB above what the process holds, a layer whose gates take
# 1 GiB, ours then torch.nn's: prints each one's exception type and whether its message says
# memory ran out.
_OUT_OF_MEMORY_SCRIPT = textwrap.dedent("""
    import resource, torch, rnnkernels
    layers = [lib.RNN(16, 4096) for lib in (rnnkernels, torch.nn)]
    x = torch.randn(1024, 64, 16)
    held = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (held + (512 << 20), resource.RLIM_INFINITY))
    for layer in layers:
        try:
            with torch.no_grad():
                layer(x)
            print("none", False)
        except Exception as error:
            print(type(error).__name__, "can't allocate memory" in str(error))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
def test_pool_out_of_memory_raises_torch_s_error():
    result = subprocess.run([sys.executable, "-c", _OUT_OF_MEMORY_SCRIPT], check=True,
                            capture_output=True, text=True, timeout=300)
    ours, torch_nn = result.stdout.splitlines()[-2:]
    assert ours == torch_nn == "RuntimeError True"


@pytest.mark.parametrize("limit", ["0", "1048576"])
def test_small_or_no_buffer_pool_gives_the_same_results(limit, tmp_path):
    script = textwrap.dedent(f"""
        import torch, rnnkernels, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_workloads import _pooled_lstm_results
        assert rnnkernels._C._pooled_free_bytes_limit() == {limit}
        results = _pooled_lstm_results()
        assert rnnkernels._C._pooled_free_bytes() <= {limit}
        torch.save(results, {str(tmp_path / "results.pt")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True,
                   env={**os.environ, "RNNKERNELS_CPU_BUFFER_CACHE_BYTES": limit})
    for a, b in zip(torch.load(tmp_path / "results.pt"), _pooled_lstm_results()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("limit", ["-1", "lots"])
def test_invalid_buffer_cache_bound_is_named(limit):
    script = ("import torch, rnnkernels\n"
              "rnnkernels.GRU(256, 256)(torch.randn(40, 32, 256))\n")  # 4 MB of gates
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "RNNKERNELS_CPU_BUFFER_CACHE_BYTES": limit})
    assert result.returncode != 0
    assert "RNNKERNELS_CPU_BUFFER_CACHE_BYTES" in result.stderr and limit in result.stderr


# ---------------------------------------------------------------------------------------------
# In-place changes to the outputs before the backward


def _inplace_program(module, x, inplace):
    """Masks the output in place (or out of place) and returns the input's and parameters'
    gradients of a weighted sum of the masked output."""
    output, _ = module(x)
    data = output.data if hasattr(output, "batch_sizes") else output
    mask = (torch.arange(data.numel()).reshape(data.shape) % 3 != 0).to(data.dtype)
    if inplace:
        data.mul_(mask)
    else:
        data = data * mask
    weights = torch.linspace(-1, 1, data.numel()).reshape(data.shape)
    leaves = [x.data if hasattr(x, "batch_sizes") else x, *module.parameters()]
    return torch.autograd.grad((data * weights).sum(), leaves)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("name", LAYER_NAMES)
def test_output_changed_in_place_before_backward(name, packed, make_pair, assert_close):
    """torch.nn's GRU and RNN (and its LSTM on packed input) let the output be changed in place
    before the backward and give the gradients of the program; ours do for every layer. (torch.nn's
    CPU LSTM refuses for padded input, an accident of its oneDNN path keeping the output.)"""
    reference, ours = make_pair(name, 5, 7, num_layers=2, batch_first=True)
    x = torch.randn(3, 6, 5, requires_grad=True)
    if packed:
        x = pack_sequence([torch.randn(n, 5, requires_grad=True) for n in (6, 4, 1)])
    expected = _inplace_program(reference, x, inplace=False)
    assert_close(_inplace_program(ours, x, inplace=True), expected)
    if name != "LSTM" or packed:
        assert_close(_inplace_program(reference, x, inplace=True), expected)


@pytest.mark.parametrize("name, hidden, proj_size", [
    ("LSTM", 256, 0),  # gate rows of 4 KiB: the CPU copies g^T contiguous for dW (backend.h)
    ("LSTM", 128, 0),  # 2 KiB: the transposed view
    ("RNN", 1024, 0),
    ("LSTM", 1040, 1024),  # the projection's dL/dh rows of 4 KiB
])
def test_weight_gradients_at_row_widths_the_cpu_copies(name, hidden, proj_size, make_pair,
                                                       assert_close):
    """The weight gradients dW = g^T x take g^T as a contiguous copy on the CPU where g's rows
    are a multiple of 4 KiB long, else as a view: both give torch.nn's gradients."""
    kwargs = {"proj_size": proj_size} if proj_size else {}
    reference, ours = make_pair(name, 8, hidden, **kwargs)
    x = torch.randn(5, 3, 8, requires_grad=True)
    grads = [torch.autograd.grad(module(x)[0].square().sum(), [x, *module.parameters()])
             for module in (reference, ours)]
    assert_close(grads[1], grads[0])


# ---------------------------------------------------------------------------------------------
# Attributes changed after construction


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_negative_dropout_set_later_raises_as_torch_nn(name, make_pair):
    reference, ours = make_pair(name, 5, 7, num_layers=2)
    for module in (reference, ours):
        module.dropout = -0.5
    x = torch.randn(4, 2, 5)
    with pytest.raises(RuntimeError) as expected:
        reference(x)
    with pytest.raises(RuntimeError) as actual:
        ours(x)
    assert str(actual.value) == str(expected.value)
    # As torch.nn: in eval mode dropout never applies, and nothing checks it.
    for module in (reference, ours):
        module.eval()
    torch.testing.assert_close(ours(x), reference(x))


@pytest.mark.parametrize("op", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dropout", [-0.5, 1.5])
def test_operator_rejects_dropout_outside_0_1(op, dropout):
    module = getattr(rnnkernels, op.upper())(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    h0 = torch.zeros(2, 2, 4)
    states = [h0, h0] if op == "lstm" else [h0]
    extra = ["tanh"] if op == "rnn" else []
    with pytest.raises(RuntimeError, match=f"dropout probability has to be between 0 and 1, "
                                           f"but got {dropout}"):
        getattr(torch.ops.rnnkernels, op)(x, None, *states, module._flat_weights, *extra, True,
                                          2, dropout, True, False, False)


def test_nonlinearity_changed_after_construction_keeps_the_mode(make_pair, assert_close):
    """torch.nn's RNN runs the mode it was built with (self.mode), whatever self.nonlinearity
    says later; so do ours."""
    reference, ours = make_pair("RNN", 5, 7)
    for module in (reference, ours):
        module.nonlinearity = "relu"
    x = torch.randn(4, 2, 5) * 3
    assert_close(ours(x), reference(x))
    assert (ours(x)[0] < 0).any()  # still tanh


# ---------------------------------------------------------------------------------------------
# Cells: mixed dtypes and non-contiguous parameters, as torch.nn accepts them


@pytest.mark.parametrize("c_dtype", [torch.float64, torch.float16])
def test_lstm_cell_promotes_c_as_torch_nn(c_dtype, make_pair):
    """torch.nn's LSTMCell runs with c in another dtype than the rest: the GEMMs in the weights'
    dtype, the cell update promoted to c's. Ours give the same results and gradients."""
    reference, ours = make_pair("LSTMCell", 5, 7)
    x = torch.randn(3, 5, requires_grad=True)
    h = torch.randn(3, 7, requires_grad=True)
    c = torch.randn(3, 7).to(c_dtype).requires_grad_()
    results = []
    for module in (reference, ours):
        out = module(x, (h, c))
        loss = sum((o.double() * torch.linspace(-1, 1, o.numel(), dtype=torch.float64)
                    .reshape(o.shape)).sum() for o in out)
        results.append([*out, *torch.autograd.grad(loss, [x, h, c, *module.parameters()])])
    assert [r.dtype for r in results[1]] == [r.dtype for r in results[0]]
    torch.testing.assert_close(results[1], results[0])


@pytest.mark.parametrize("name", CELL_NAMES)
def test_cells_take_non_contiguous_weights(name, make_pair, assert_close):
    """A weight Parameter set to a transposed tensor, as torch.nn's cells accept: same results
    and gradients (the gradient keeps the Parameter's strides' shape)."""
    reference, ours = make_pair(name, 5, 7)
    gates = reference.weight_hh.shape[0]
    for module in (reference, ours):
        module.weight_hh = nn.Parameter(reference.weight_hh.detach().t().contiguous().t())
        module.weight_ih = nn.Parameter(reference.weight_ih.detach().t().contiguous().t())
        assert not module.weight_hh.is_contiguous() and module.weight_hh.shape == (gates, 7)
    x = torch.randn(3, 5, requires_grad=True)
    results = []
    for module in (reference, ours):
        out = module(x)
        out = out if isinstance(out, tuple) else (out,)
        loss = sum((o * torch.linspace(-1, 1, o.numel()).reshape(o.shape)).sum() for o in out)
        results.append([*out, *torch.autograd.grad(loss, [x, *module.parameters()])])
    assert_close(results[1], results[0])


# ---------------------------------------------------------------------------------------------
# Precision of the activations near zero

# Pre-activations from 1e-30 to 10 (and their negatives): tanh's relative precision matters
# where it is small.
_TINY_TO_LARGE = torch.cat([torch.logspace(-30, 1, 400, dtype=torch.float64),
                            -torch.logspace(-30, 1, 400, dtype=torch.float64)])


def _rnn_tanh_of(values, dtype):
    """tanh(values) through rnn_layer's kernel: identity input weights, no recurrence, no bias
    (one step, one row of len(values) units)."""
    units = values.numel()
    x = values.to(dtype).reshape(1, units)
    eye = torch.eye(units, dtype=dtype)
    zeros = torch.zeros(units, units, dtype=dtype)
    h0 = torch.zeros(1, units, dtype=dtype)
    return torch.ops.rnnkernels.rnn_layer(x, torch.tensor([1]), h0, eye, zeros, None, None,
                                          "tanh", False, False)[0].reshape(-1), x.reshape(-1)


def test_float64_tanh_keeps_full_relative_precision():
    got, x = _rnn_tanh_of(_TINY_TO_LARGE, torch.float64)
    want = torch.tanh(x)
    relative = ((got - want).abs() / want.abs()).max().item()
    assert relative <= 4 * torch.finfo(torch.float64).eps, relative


def test_float32_tanh_relative_precision():
    """float32 computes tanh as a rational function: its relative error stays within 1e-6
    (about 8 ulp) over the whole range, sampled densely, and it saturates to exactly +-1."""
    values = torch.logspace(-37, 1.2, 16000, dtype=torch.float64)
    worst = 0.0
    for chunk in torch.cat([values, -values]).split(800):
        got, x = _rnn_tanh_of(chunk, torch.float32)
        want = torch.tanh(x.double())
        worst = max(worst, ((got.double() - want).abs() / want.abs()).max().item())
    assert worst <= 1e-6, worst
    # One value a call: the identity weight would spread an infinity as NaN over the others.
    for value in [9.5, 30.0, float("inf")]:
        assert _rnn_tanh_of(torch.tensor([value]), torch.float32)[0].item() == 1.0
        assert _rnn_tanh_of(torch.tensor([-value]), torch.float32)[0].item() == -1.0


def _lstm_sigmoid_of(values, dtype=torch.float32):
    """sigmoid(values) through lstm_layer's kernel: one step from zero states and a zero input,
    the values the input gate's bias and the cell gate's bias large, so c_n = i * tanh(g) = i."""
    units = values.numel()
    b_ih = torch.zeros(4 * units, dtype=dtype)
    b_ih[:units] = values.to(dtype)
    b_ih[2 * units:3 * units] = 30.0
    zeros = torch.zeros(1, units, dtype=dtype)
    weights = torch.zeros(4 * units, units, dtype=dtype)
    c_n = torch.ops.rnnkernels.lstm_layer(zeros, torch.tensor([1]), zeros, zeros, weights,
                                          weights, b_ih, None, None, False, False)[2]
    return c_n.reshape(-1), b_ih[:units]


def test_float32_sigmoid_relative_precision():
    """float32's sigmoid keeps its relative precision down to where it is about 1e-35, and maps
    +-inf to exactly 1 and 0."""
    values = torch.cat([torch.linspace(-80, 40, 24000, dtype=torch.float64),
                        torch.logspace(-30, 0, 800, dtype=torch.float64)])
    worst = 0.0
    for chunk in values.split(800):
        got, x = _lstm_sigmoid_of(chunk)
        want = torch.sigmoid(x.double())
        worst = max(worst, ((got.double() - want).abs() / want).max().item())
    assert worst <= 1e-6, worst
    assert _lstm_sigmoid_of(torch.tensor([float("inf"), float("-inf")]))[0].tolist() == [1.0, 0.0]


def _excess_over_bfloat16_rounding(got, x, exact):
    """How far bfloat16 results lie beyond half a bfloat16 ulp from the exact values, relative to
    them: at most the relative error of the float32 math before the rounding."""
    want = exact(x.double())
    half_ulp = 2.0 ** (torch.floor(torch.log2(want.abs())) - 8)
    return (((got.double() - want).abs() - half_ulp) / want.abs()).max().item()


def test_bfloat16_activations_are_within_2e_4_before_their_rounding():
    """bfloat16's steps run coarser float32 activations (within 2e-4, a tenth of bfloat16's
    half-ulp or less): every result is the exact one, or a neighbour whose rounding boundary
    lies within 2e-4 of it; tanh and sigmoid saturate exactly as float32's."""
    values = torch.logspace(-37, 1.2, 16000, dtype=torch.float64)
    worst = 0.0
    for chunk in torch.cat([values, -values]).split(800):
        got, x = _rnn_tanh_of(chunk, torch.bfloat16)
        worst = max(worst, _excess_over_bfloat16_rounding(got, x, torch.tanh))
    assert worst <= 2e-4, worst
    values = torch.cat([torch.linspace(-80, 40, 24000, dtype=torch.float64),
                        torch.logspace(-30, 0, 800, dtype=torch.float64)])
    worst = 0.0
    for chunk in values.split(800):
        got, x = _lstm_sigmoid_of(chunk, torch.bfloat16)
        worst = max(worst, _excess_over_bfloat16_rounding(got, x, torch.sigmoid))
    assert worst <= 2e-4, worst
    for value in [9.5, 30.0, float("inf")]:
        assert _rnn_tanh_of(torch.tensor([value]), torch.bfloat16)[0].item() == 1.0
        assert _rnn_tanh_of(torch.tensor([-value]), torch.bfloat16)[0].item() == -1.0
    special = torch.tensor([float("inf"), float("-inf")])
    assert _lstm_sigmoid_of(special, torch.bfloat16)[0].tolist() == [1.0, 0.0]


# ---------------------------------------------------------------------------------------------
# A batch of one across threads


def _batch_of_one_results(module, x, state):
    output, final = module(x, state)
    loss = output.float().square().sum() + sum(s.float().sum() for s in
                                               (final if isinstance(final, tuple) else (final,)))
    loss.backward()
    return [output, final, x.grad, *(p.grad for p in module.parameters())]


@pytest.mark.parametrize("name,kwargs", [("LSTM", {}), ("GRU", {}), ("RNN", {}),
                                         ("RNN", {"nonlinearity": "relu"})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_batch_of_one_split_by_units_across_threads(name, kwargs, dtype, assert_close):
    """A batch of one, whose hidden units the CPU splits between two threads where a step's
    GEMM is large enough (H = 256 and 10 steps pass csrc/cpu/backend.h's thresholds for every
    kind), both directions: outputs, final states and every gradient agree with the same layer
    on one thread (each unit's products are summed in the same order either way) and, in
    float32 and float64, with torch.nn's."""
    hidden = 256
    torch.manual_seed(0)
    reference = getattr(nn, name)(48, hidden, bidirectional=True, **kwargs).to(dtype)
    ours = getattr(rnnkernels, name)(48, hidden, bidirectional=True, **kwargs).to(dtype)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(10, 1, 48, dtype=dtype)
    h0 = torch.randn(2, 1, hidden, dtype=dtype)
    state = (h0, torch.randn(2, 1, hidden, dtype=dtype)) if name == "LSTM" else h0
    threads = torch.get_num_threads()

    def run(module, count):
        module.zero_grad()
        torch.set_num_threads(count)
        try:
            return _batch_of_one_results(module, x.clone().requires_grad_(), state)
        finally:
            torch.set_num_threads(threads)

    split = run(ours, 2)
    whole = run(ours, 1)
    for got, want in zip(split, whole):
        for a, b in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            assert torch.equal(a, b)
    if dtype != torch.bfloat16:
        assert_close(split, run(reference, 2))
