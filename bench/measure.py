"""Measures one (kind, mode, shape) on torch.nn and rnnkernels side by side."""

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.utils.benchmark import Timer

import rnnkernels
from bench.gemm_bound import GemmBound, layer_gemms
from bench.shapes import Shape

# The reference first: it is the baseline every ratio divides by.
LIBRARIES = ("torch.nn", "rnnkernels")
MODULE_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


@dataclass(frozen=True)
class Budget:
    """How long to measure: up to `rounds` alternations of the libraries, each measuring at
    least `min_run_time` seconds; rounds stop once every library has `rounds * min_run_time`."""

    rounds: int
    min_run_time: float
    threads: int


def build_modules(kind: str, shape: Shape, dtype: torch.dtype, device: torch.device) -> dict:
    """Both libraries' modules for one shape, with the same weights so outputs can be compared."""
    arguments = {
        "input_size": shape.input_size,
        "hidden_size": shape.hidden_size,
        "num_layers": shape.layers,
        "bidirectional": shape.bidirectional,
        "dtype": dtype,
        "device": device,
    }
    reference = getattr(torch.nn, MODULE_NAMES[kind])(**arguments)
    candidate = getattr(rnnkernels, MODULE_NAMES[kind])(**arguments)
    candidate.load_state_dict(reference.state_dict())
    return {"torch.nn": reference, "rnnkernels": candidate}


def flat_outputs(outputs) -> list:
    """(output, h_n) or (output, (h_n, c_n)) -> [output, h_n(, c_n)]."""
    output, state = outputs
    return [output, *state] if isinstance(state, tuple) else [output, state]


def storage_key_and_bytes(tensor: torch.Tensor) -> tuple:
    try:
        storage = tensor.untyped_storage()
        return ("storage", tensor.device, storage.data_ptr()), storage.nbytes()
    except (RuntimeError, NotImplementedError):
        # Opaque tensors (e.g. oneDNN's) have no storage to share: count each one whole.
        return ("opaque", id(tensor)), tensor.numel() * tensor.element_size()


def forward_with_saved_bytes(module, inputs: torch.Tensor, training: bool) -> tuple[list, int]:
    """One forward pass: its flat outputs, and the bytes of the unique storages autograd saved
    for backward (views of one buffer count once, as they cost memory once)."""
    saved = {}

    def pack(tensor):
        key, nbytes = storage_key_and_bytes(tensor)
        saved[key] = nbytes
        return tensor

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
    with torch.set_grad_enabled(training), hooks:
        outputs = flat_outputs(module(inputs))
    # Detached, so the graph and its saved tensors are not held in memory through the timing.
    return [output.detach() for output in outputs], sum(saved.values())


def inference_step(module, inputs: torch.Tensor) -> Callable[[], None]:
    def step():
        with torch.no_grad():
            module(inputs)

    return step


def training_step(module, inputs: torch.Tensor, grad_outputs: list) -> Callable[[], None]:
    """Forward and backward into the gradients of the parameters and the input. Dense random
    upstream gradients, as a loss would give, rather than the broadcast ones of a .sum()."""
    parameters = list(module.parameters())

    def step():
        for parameter in parameters:
            parameter.grad = None
        inputs.grad = None
        torch.autograd.backward(flat_outputs(module(inputs)), grad_outputs)

    return step


def time_interleaved(steps: dict, budget: Budget) -> dict:
    """Per-iteration times of each step, the libraries alternating within a round and swapping
    order every round, so drift of the machine (clock, other load) hits both alike."""
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


def measure(
    kind: str,
    mode: str,
    shape: Shape,
    dtype: torch.dtype,
    device: torch.device,
    budget: Budget,
    gemm_bound: GemmBound,
) -> dict:
    """One result row: medians, ratio, GEMM bound and efficiency, saved bytes, output check."""
    training = mode == "training"
    modules = build_modules(kind, shape, dtype, device)
    inputs = torch.randn(
        shape.seq_len,
        shape.batch,
        shape.input_size,
        dtype=dtype,
        device=device,
        requires_grad=training,
    )

    # The first forward per library also warms it up (allocator, oneDNN primitives).
    outputs, saved_bytes = {}, {}
    for library, module in modules.items():
        outputs[library], saved_bytes[library] = forward_with_saved_bytes(module, inputs, training)

    if training:
        grad_outputs = [torch.randn_like(output) for output in outputs["torch.nn"]]
        steps = {
            library: training_step(module, inputs, grad_outputs)
            for library, module in modules.items()
        }
    else:
        steps = {library: inference_step(module, inputs) for library, module in modules.items()}
    times = time_interleaved(steps, budget)

    medians = {library: statistics.median(times[library]) for library in LIBRARIES}
    gemms = layer_gemms(kind, shape, training)
    bound_seconds = gemm_bound.seconds(gemms)
    return {
        "kind": kind,
        "mode": mode,
        "shape": asdict(shape),
        "median_seconds": medians,
        "ratio": medians["torch.nn"] / medians["rnnkernels"],
        "gemm_flops": sum(gemm.flops for gemm in gemms),
        "gemm_bound_seconds": bound_seconds,
        "efficiency": {library: bound_seconds / medians[library] for library in LIBRARIES},
        "saved_bytes": saved_bytes,
        "max_abs_diff": max_abs_difference(outputs["rnnkernels"], outputs["torch.nn"]),
    }
