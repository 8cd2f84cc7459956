"""Measures one case (kind, mode, shape, precision) on torch.nn, rnnkernels and, on the CPU,
oneDNN's RNN primitive, side by side."""

from __future__ import annotations

import contextlib
import functools
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
from torch.utils.benchmark import Timer

import rnnkernels
from bench import native
from bench.flops import layer_flops, layer_gemms
from bench.onednn_rnn import OneDnnRnn, Unsupported
from bench.pieces import PIECES
from bench.shapes import Case, Shape

# torch.nn first: the reference every output difference is taken against.
MODULE_LIBRARIES = ("torch.nn", "rnnkernels")
ONEDNN = "oneDNN"
# The layer's GEMMs alone through oneDNN's matmul: what a layer built on it needs at least.
GEMMS = "oneDNN GEMMs"
# rnnkernels' own layer run in float32, timed beside its autocast rows: the speedup autocast buys.
OWN_FLOAT32 = "rnnkernels float32"
# What rnnkernels' speedups are taken over: time of the baseline / time of rnnkernels.
BASELINES = ("torch.nn", ONEDNN, GEMMS, OWN_FLOAT32)
# The libraries whose outputs are compared with torch.nn's (the same computation and precision).
COMPARED = ("rnnkernels", ONEDNN)
MODULE_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "layernorm_lstm": "LayerNormLSTM"}


@dataclass(frozen=True)
class Budget:
    """How long to measure: up to `rounds` alternations of the libraries, each measuring at
    least `min_run_time` seconds; rounds stop once every library has `rounds * min_run_time`."""

    rounds: int
    min_run_time: float
    threads: int


def libraries_for(device: torch.device, cases: list[Case]) -> tuple[str, ...]:
    """The libraries a run times: on the CPU also oneDNN's RNN primitive and the layer's GEMMs
    alone, where they built; with autocast rows also rnnkernels in float32."""
    libraries = MODULE_LIBRARIES
    if device.type == "cpu" and native.load().has_onednn_rnn:
        libraries += (ONEDNN, GEMMS)
    if any(case.autocast for case in cases):
        libraries += (OWN_FLOAT32,)
    return libraries


def build_modules(kind: str, shape: Shape, dtype: torch.dtype, device: torch.device) -> dict:
    """Both modules for one shape, with the same weights so outputs can be compared: torch.nn's
    layer of the kind, or for a kind torch.nn has none of, the model of torch.nn pieces users
    write for it (bench/pieces.py)."""
    arguments = {
        "input_size": shape.input_size,
        "hidden_size": shape.hidden_size,
        "num_layers": shape.layers,
        "bidirectional": shape.bidirectional,
        "dtype": dtype,
        "device": device,
    }
    candidate = getattr(rnnkernels, MODULE_NAMES[kind])(**arguments)
    if kind in PIECES:
        return {"torch.nn": PIECES[kind](candidate), "rnnkernels": candidate}
    reference = getattr(torch.nn, MODULE_NAMES[kind])(**arguments)
    candidate.load_state_dict(reference.state_dict())
    return {"torch.nn": reference, "rnnkernels": candidate}


def make_inputs(shape: Shape, dtype: torch.dtype, device: torch.device, training: bool):
    """(what the modules take, the leaf tensor whose gradient training computes): a padded
    [seq_len, batch, input_size] tensor, or a PackedSequence of the shape's lengths."""
    padded = torch.randn(shape.seq_len, shape.batch, shape.input_size, dtype=dtype, device=device)
    if not shape.packed:
        return padded.requires_grad_(training), padded
    packed = pack_padded_sequence(padded, shape.lengths())
    leaf = packed.data.requires_grad_(training)
    return packed._replace(data=leaf), leaf


def precision_context(autocast: str | None, device: torch.device) -> Callable:
    """A new context per call: torch.autocast in the case's dtype, or nothing."""
    if autocast is None:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device.type, dtype=getattr(torch, autocast))


def flat_outputs(outputs) -> list:
    """(output, h_n) or (output, (h_n, c_n)) -> [output, h_n(, c_n)], a packed output's data."""
    output, state = outputs
    if isinstance(output, PackedSequence):
        output = output.data
    return [output, *state] if isinstance(state, tuple) else [output, state]


def storage_key_and_bytes(tensor: torch.Tensor) -> tuple:
    try:
        storage = tensor.untyped_storage()
        return ("storage", tensor.device, storage.data_ptr()), storage.nbytes()
    except (RuntimeError, NotImplementedError):
        # Opaque tensors (e.g. oneDNN's) have no storage to share: count each one whole.
        return ("opaque", id(tensor)), tensor.numel() * tensor.element_size()


def forward_with_saved_bytes(module, inputs, training: bool, precision) -> tuple[list, int]:
    """One forward pass: its flat outputs, and the bytes of the unique storages autograd saved
    for backward (views of one buffer count once, as they cost memory once)."""
    saved = {}

    def pack(tensor):
        key, nbytes = storage_key_and_bytes(tensor)
        saved[key] = nbytes
        return tensor

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
    with torch.set_grad_enabled(training), hooks, precision():
        outputs = flat_outputs(module(inputs))
    # Detached, so the graph and its saved tensors are not held in memory through the timing.
    return [output.detach() for output in outputs], sum(saved.values())


def inference_step(module, inputs, precision) -> Callable[[], None]:
    def step():
        with torch.no_grad(), precision():
            module(inputs)

    return step


def training_step(module, inputs, leaf, grad_outputs: list, precision) -> Callable[[], None]:
    """Forward and backward into the gradients of the parameters and the input. Dense random
    upstream gradients, as a loss would give, rather than the broadcast ones of a .sum()."""
    parameters = list(module.parameters())

    def step():
        for parameter in parameters:
            parameter.grad = None
        leaf.grad = None
        with precision():
            outputs = flat_outputs(module(inputs))
        torch.autograd.backward(outputs, grad_outputs)

    return step


def time_interleaved(steps: dict, budget: Budget) -> dict:
    """Per-iteration times of each step, the libraries alternating within a round and reversing
    order every round, so drift of the machine (clock, other load) hits all alike."""
    timers = {
        library: Timer(stmt="step()", globals={"step": step}, num_threads=budget.threads)
        for library, step in steps.items()
    }
    times = {library: [] for library in steps}
    measured_seconds = dict.fromkeys(steps, 0.0)
    order = list(steps)
    for _ in range(budget.rounds):
        for library in order:
            measurement = timers[library].blocked_autorange(min_run_time=budget.min_run_time)
            times[library] += measurement.times
            measured_seconds[library] += sum(measurement.raw_times)
        order.reverse()
        # Slow shapes fill the budget in one round: more rounds would only add warm-up calls.
        if min(measured_seconds.values()) >= budget.rounds * budget.min_run_time:
            break
    return times


def max_abs_difference(outputs: list, reference_outputs: list) -> float:
    return max(
        (output.double() - reference.double()).abs().max().item()
        for output, reference in zip(outputs, reference_outputs)
    )


def failure(error: Exception) -> str:
    return f"error: {native.first_line(error)}"


@dataclass
class Contenders:
    """The libraries ready to time one case (the call to time, the outputs of their first
    forward, the bytes it saved for backward), and why the others are not."""

    steps: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    saved_bytes: dict = field(default_factory=dict)
    not_available: dict = field(default_factory=dict)
    grad_outputs: list | None = None  # training: the upstream gradients every library gets

    def drop(self, library: str, reason: str) -> None:
        self.not_available[library] = reason
        self.steps.pop(library, None)
        self.outputs.pop(library, None)


def prepare_modules(modules: dict, inputs, leaf, training: bool, precision) -> Contenders:
    """torch.nn's and rnnkernels' calls; a library that raises (torch.nn's LSTM under bfloat16
    autocast on CPUs without AVX-512, say) is recorded and left out."""
    contenders = Contenders()
    # The first forward per library also warms it up (allocator, oneDNN primitives).
    for library, module in modules.items():
        try:
            contenders.outputs[library], contenders.saved_bytes[library] = (
                forward_with_saved_bytes(module, inputs, training, precision)
            )
        except Exception as error:  # noqa: BLE001: recorded in the row, the run goes on
            contenders.drop(library, failure(error))
    if not training:
        for library in contenders.outputs:
            contenders.steps[library] = inference_step(modules[library], inputs, precision)
        return contenders
    if contenders.outputs:
        first_outputs = next(iter(contenders.outputs.values()))
        contenders.grad_outputs = [torch.randn_like(output) for output in first_outputs]
    for library in list(contenders.outputs):
        step = training_step(modules[library], inputs, leaf, contenders.grad_outputs, precision)
        try:
            step()  # a backward can fail where its forward did not; this also warms it up
            contenders.steps[library] = step
        except Exception as error:  # noqa: BLE001
            contenders.drop(library, failure(error))
    return contenders


def add_onednn(contenders: Contenders, reference, inputs, grad_outputs, autocast) -> None:
    """oneDNN's RNN primitive with the reference module's weights, or why it cannot run."""
    try:
        onednn = OneDnnRnn(reference, inputs, grad_outputs, autocast)
        onednn.step()
    except Unsupported as reason:
        contenders.drop(ONEDNN, str(reason))
        return
    except Exception as error:  # noqa: BLE001
        contenders.drop(ONEDNN, failure(error))
        return
    contenders.steps[ONEDNN], contenders.outputs[ONEDNN] = onednn.step, onednn.outputs


def add_gemms(contenders: Contenders, case: Case, dtype: torch.dtype) -> None:
    """The case's GEMMs (bench/flops.py's list) through oneDNN's matmul, float32 only."""
    if dtype != torch.float32 or case.autocast:
        contenders.not_available[GEMMS] = "float32 only"
        return
    contenders.steps[GEMMS] = gemms_alone(case.kind, case.shape, case.mode == "training").step


def gemms_alone(kind: str, shape: Shape, training: bool):
    """bench/native.cpp's Gemms over the layer's GEMMs, set up (weights reordered, each
    per-step product's split picked); its `step()` runs them all."""
    binding = native.load().module
    return binding.Gemms([
        binding.Gemm(gemm.m, gemm.k, gemm.n, gemm.count, gemm.weight, gemm.transposed_a)
        for gemm in layer_gemms(kind, shape, training)
    ])


def add_own_float32(contenders: Contenders, module, inputs, leaf, training: bool,
                    autocast: str | None) -> None:
    """rnnkernels' layer without autocast, for an autocast row (its outputs are not compared:
    another precision)."""
    if autocast is None:
        contenders.not_available[OWN_FLOAT32] = "not an autocast row"
        return
    if "rnnkernels" not in contenders.steps:
        contenders.not_available[OWN_FLOAT32] = "rnnkernels did not run"
        return
    precision = contextlib.nullcontext
    contenders.steps[OWN_FLOAT32] = (
        training_step(module, inputs, leaf, contenders.grad_outputs, precision)
        if training
        else inference_step(module, inputs, precision)
    )


def measure(
    case: Case,
    dtype: torch.dtype,
    device: torch.device,
    budget: Budget,
    libraries: tuple[str, ...],
) -> dict:
    """One result row: medians, speedups, GFLOP/s, saved bytes, output check (the fraction of
    the peak comes later, from add_peak_fraction). A library that cannot run the case gets the
    reason instead of a time."""
    training = case.mode == "training"
    modules = build_modules(case.kind, case.shape, dtype, device)
    inputs, leaf = make_inputs(case.shape, dtype, device, training)
    precision = precision_context(case.autocast, device)
    contenders = prepare_modules(modules, inputs, leaf, training, precision)
    if ONEDNN in libraries:
        grad_outputs = contenders.grad_outputs if training else None
        add_onednn(contenders, modules["torch.nn"], inputs, grad_outputs, case.autocast)
    if GEMMS in libraries:
        add_gemms(contenders, case, dtype)
    if OWN_FLOAT32 in libraries:
        add_own_float32(contenders, modules["rnnkernels"], inputs, leaf, training, case.autocast)

    steps, outputs = contenders.steps, contenders.outputs
    times = time_interleaved(steps, budget) if steps else {}
    medians = {library: statistics.median(times[library]) for library in times}
    flops = layer_flops(case.kind, case.shape, training)
    gflops = {library: flops / median / 1e9 for library, median in medians.items()}
    return {
        "kind": case.kind,
        "mode": case.mode,
        "shape": asdict(case.shape),
        "autocast": case.autocast,
        "median_seconds": {library: medians.get(library) for library in libraries},
        "not_available": contenders.not_available,
        "speedup": {
            baseline: medians[baseline] / medians["rnnkernels"]
            if baseline in medians and "rnnkernels" in medians
            else None
            for baseline in BASELINES
            if baseline in libraries
        },
        "gemm_flops": flops,
        "gflops": {library: gflops.get(library) for library in libraries},
        "saved_bytes": {
            library: contenders.saved_bytes.get(library) for library in MODULE_LIBRARIES
        },
        "max_abs_diff": {
            library: max_abs_difference(outputs[library], outputs["torch.nn"])
            if library in outputs and "torch.nn" in outputs
            else None
            for library in COMPARED
            if library in libraries
        },
    }


def add_peak_fraction(result: dict, peak: dict | None) -> None:
    """Each library's GFLOP/s as a fraction of `peak`, the measured peak of the row's dtype
    (float32, or its autocast dtype), None without one."""
    result["peak_fraction"] = {
        library: gflops / peak["gflops"] if gflops is not None and peak else None
        for library, gflops in result["gflops"].items()
    }
