"""The rnnkernels:: operators: loads the compiled library (which defines them, csrc/ops/ops.cpp,
their CPU/CUDA kernels and their autograd, double backward included, csrc/ops/autograd.cpp) and
registers the fake kernels of the generic layer operators (for torch.compile and torch.export);
every other operator is a composite of those.

Shapes (see csrc/ops/ops.cpp): input ``[N, I]`` packed rows with ``batch_sizes [T]`` (or a
padded ``[T, B, I]``), states ``h0 [B, P]``, ``c0 [B, H]`` (or ``[1, B, *]``); params
``w_ih [G*H, I]``, ``w_hh [G*H, P]``, ``b_ih``/``b_hh [G*H]``, then the cell's own
(``w_hr [P, H]``).
"""

import math
import warnings

import torch

try:
    from . import _C  # importing it registers the operators
except ImportError as error:  # pragma: no cover - depends on how the package was installed
    raise ImportError(
        "rnnkernels: the compiled extension rnnkernels._C is missing or failed to load "
        f"({error}). Build it from the source tree, with torch installed first: "
        "`pip install --no-build-isolation .` (or `pip install --no-build-isolation -e .` "
        "for development)."
    ) from error

ops = torch.ops.rnnkernels

BUILD_INFO = dict(_C._build_info())


def warn_if_slow_build(info):
    """Warns when the build lacks oneDNN (``pip install -q`` hides the build's own warning)."""
    if not info["onednn"]:
        warnings.warn(
            "rnnkernels was built without oneDNN: float32 GEMMs on the CPU run through ATen's, "
            "which makes CPU layers several times slower (training can fall below torch.nn). "
            "Install oneDNN and rebuild: `pip install onednn-cpu-gomp==2023.2.0 "
            "onednn-devel-cpu-gomp==2023.2.0 && pip install --no-build-isolation "
            "--force-reinstall --no-deps .` from the source tree."
        )


warn_if_slow_build(BUILD_INFO)


# The cells' signatures (csrc/layer/layer_common.h, CellSignature): gates, states, params (and
# which of them get no gradient) and reserve width by cell name.
CELLS = {cell["name"]: cell for cell in _C._cells()}


def _cell(name):
    if name not in CELLS:
        known = ", ".join(f"'{n}'" for n in CELLS)
        raise RuntimeError(f"rnnkernels: unknown cell '{name}', expected one of {known}")
    return CELLS[name]


# ---------------------------------------------------------------------------------------------
# Fake kernels: output shapes from input shapes alone (batch_sizes is never read).
#
# They also serve as the operators' Meta kernels, which the dispatcher picks as soon as one
# argument is a meta tensor, even among CPU ones: so they check devices as the real kernels do,
# or a meta argument would get uninitialised CPU tensors back instead of an error.


def _check_devices(op, input, batch_sizes, tensors):
    """The real kernels' device checks (csrc/layer/layer_common.cpp): ``batch_sizes`` on the
    CPU, every other tensor (name -> tensor or None) on the device of ``input``."""
    if batch_sizes.device.type != "cpu":
        raise RuntimeError(f"{op}: expected batch_sizes on the CPU (as in PackedSequence), got "
                           f"{batch_sizes.device}")
    for name, tensor in tensors:
        if tensor is not None and tensor.device != input.device:
            raise RuntimeError(f"{op}: expected {name} on device {input.device} (the device of "
                               f"input), got {tensor.device}")


def _named(cell, states, params):
    """(name, tensor) of the initial states (``h0``, ``c0``) and the params, as messages name
    them."""
    names = [f"{state}0" for state in cell["states"]]
    return [*zip(names, states), *zip(cell["params"], params)]


@torch.library.register_fake("rnnkernels::layer")
def _layer_fake(cell, input, batch_sizes, states, params, scalars, reverse, train):
    info = _cell(cell)
    _check_devices(info["forward_op"], input, batch_sizes, _named(info, states, params))
    hidden = params[1].shape[0] // info["gates"]
    projection = info["projection"]
    projected = projection >= 0 and params[projection] is not None
    # Rows [N, I] or a padded [T, B, I], whose output is [T, B, *] (csrc/ops/layer_kernels.h).
    leading = tuple(input.shape[:-1])
    rows = math.prod(leading)
    reserve = (input.new_empty((rows if train else 0, info["reserve"] * hidden))
               if info["reserve"] else input.new_empty((0,)))
    output = input.new_empty((*leading, params[projection].shape[0] if projected else hidden))
    return output, [s.new_empty(s.shape) for s in states], reserve


@torch.library.register_fake("rnnkernels::layer_backward")
def _layer_backward_fake(cell, grad_output, grad_finals, input, batch_sizes, states, params,
                         scalars, output, reserve, reverse):
    info = _cell(cell)
    grads = [("grad_output", grad_output)]
    grads += [(f"grad_{state}_n", g) for state, g in zip(info["states"], grad_finals)]
    _check_devices(info["backward_op"], input, batch_sizes,
                   [*grads, *_named(info, states, params), ("output", output),
                    ("reserve", reserve)])
    # An absent param and a mask (no gradient) get an empty one.
    return (
        input.new_empty(input.shape),
        [s.new_empty(s.shape) for s in states],
        [p.new_empty(p.shape) if p is not None and i not in info["without_grad"]
         else input.new_empty((0,)) for i, p in enumerate(params)],
    )
