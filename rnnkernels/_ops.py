"""The rnnkernels:: operators: loads the compiled library (which defines them and their CPU/CUDA
kernels, csrc/ops.cpp, and their autograd, csrc/autograd.cpp), registers their fake kernels (for
torch.compile and torch.export) and installs the hook that makes create_graph=True backwards
differentiable.

Shapes (see csrc/ops.cpp): input ``[N, I]`` packed rows with ``batch_sizes [T]``, ``h0 [B, P]``,
``c0 [B, H]``, ``w_ih [G*H, I]``, ``w_hh [G*H, P]``, ``b_ih``/``b_hh [G*H]``, ``w_hr [P, H]``.
"""

import warnings

import torch

from . import reference

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


def _reference_grads(forward, inputs, outputs_grads):
    """Gradients of ``forward(*inputs)`` computed through the reference with a graph, so that
    they can be differentiated again (create_graph=True). None for inputs that are None or do not
    require grad."""
    wanted = [i for i, x in enumerate(inputs) if x is not None and x.requires_grad]
    with torch.enable_grad():
        outputs = forward(*inputs)
        grads = torch.autograd.grad(
            outputs,
            [inputs[i] for i in wanted],
            outputs_grads,
            create_graph=True,
            allow_unused=True,
        )
    result = [None] * len(inputs)
    for i, grad in zip(wanted, grads):
        result[i] = grad
    return result


# ---------------------------------------------------------------------------------------------
# Fake kernels: output shapes from input shapes alone (batch_sizes is never read).
#
# They also serve as the operators' Meta kernels, which the dispatcher picks as soon as one
# argument is a meta tensor, even among CPU ones: so they check devices as the real kernels do,
# or a meta argument would get uninitialised CPU tensors back instead of an error.


def _check_devices(op, input, batch_sizes, **tensors):
    """The real kernels' device checks (csrc/layer_common.cpp): ``batch_sizes`` on the CPU,
    every other tensor (None allowed) on the device of ``input``."""
    if batch_sizes.device.type != "cpu":
        raise RuntimeError(f"{op}: expected batch_sizes on the CPU (as in PackedSequence), got "
                           f"{batch_sizes.device}")
    for name, tensor in tensors.items():
        if tensor is not None and tensor.device != input.device:
            raise RuntimeError(f"{op}: expected {name} on device {input.device} (the device of "
                               f"input), got {tensor.device}")


@torch.library.register_fake("rnnkernels::lstm_layer")
def _lstm_layer_fake(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, train):
    _check_devices("lstm_layer", input, batch_sizes, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh,
                   b_ih=b_ih, b_hh=b_hh, w_hr=w_hr)
    hidden = w_hh.shape[0] // 4
    state = w_hr.shape[0] if w_hr is not None else hidden
    rows = input.shape[0]
    return (
        input.new_empty((rows, state)),
        h0.new_empty(h0.shape),
        c0.new_empty(c0.shape),
        input.new_empty((rows if train else 0, 5 * hidden)),
    )


@torch.library.register_fake("rnnkernels::lstm_layer_backward")
def _lstm_layer_backward_fake(grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, c0, w_ih,
                              w_hh, b_ih, b_hh, w_hr, output, reserve, reverse):
    _check_devices("lstm_layer_backward", input, batch_sizes, grad_output=grad_output,
                   grad_h_n=grad_h_n, grad_c_n=grad_c_n, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh,
                   b_ih=b_ih, b_hh=b_hh, w_hr=w_hr, output=output, reserve=reserve)
    return tuple(
        t.new_empty(t.shape) if t is not None else input.new_empty((0,))
        for t in (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    )


@torch.library.register_fake("rnnkernels::gru_layer")
def _gru_layer_fake(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse, train):
    _check_devices("gru_layer", input, batch_sizes, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih,
                   b_hh=b_hh)
    hidden = w_hh.shape[0] // 3
    rows = input.shape[0]
    return (
        input.new_empty((rows, hidden)),
        h0.new_empty(h0.shape),
        input.new_empty((rows if train else 0, 4 * hidden)),
    )


@torch.library.register_fake("rnnkernels::gru_layer_backward")
def _gru_layer_backward_fake(grad_output, grad_h_n, input, batch_sizes, h0, w_ih, w_hh, b_ih,
                             b_hh, output, reserve, reverse):
    _check_devices("gru_layer_backward", input, batch_sizes, grad_output=grad_output,
                   grad_h_n=grad_h_n, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                   output=output, reserve=reserve)
    return tuple(
        t.new_empty(t.shape) if t is not None else input.new_empty((0,))
        for t in (input, h0, w_ih, w_hh, b_ih, b_hh)
    )


@torch.library.register_fake("rnnkernels::rnn_layer")
def _rnn_layer_fake(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse, train):
    _check_devices("rnn_layer", input, batch_sizes, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih,
                   b_hh=b_hh)
    return (
        input.new_empty((input.shape[0], w_hh.shape[0])),
        h0.new_empty(h0.shape),
        input.new_empty((0,)),
    )


@torch.library.register_fake("rnnkernels::rnn_layer_backward")
def _rnn_layer_backward_fake(grad_output, grad_h_n, input, batch_sizes, h0, w_ih, w_hh, b_ih,
                             b_hh, nonlinearity, output, reverse):
    _check_devices("rnn_layer_backward", input, batch_sizes, grad_output=grad_output,
                   grad_h_n=grad_h_n, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                   output=output)
    return tuple(
        t.new_empty(t.shape) if t is not None else input.new_empty((0,))
        for t in (input, h0, w_ih, w_hh, b_ih, b_hh)
    )


# ---------------------------------------------------------------------------------------------
# Autograd is registered in C++ (csrc/autograd.cpp). A backward with grad mode on
# (create_graph=True) needs gradients that are differentiable themselves: the C++ autograd asks
# this hook for them, and it recomputes them through the reference.


def _reference_backward(op, inputs, grads, reverse, nonlinearity):
    """Differentiable gradients of ``op``'s inputs (all but ``batch_sizes``; None for absent or
    non-differentiable ones) given those of its outputs; arguments as in csrc/autograd.h."""
    input, batch_sizes, *params = inputs
    if op == "lstm_layer":
        def forward(x, h, c, wi, wh, bi, bh, wr):
            return reference.lstm_layer(x, batch_sizes, h, c, wi, wh, bi, bh, wr, reverse)
    elif op == "gru_layer":
        def forward(x, h, wi, wh, bi, bh):
            return reference.gru_layer(x, batch_sizes, h, wi, wh, bi, bh, reverse)
    else:
        def forward(x, h, wi, wh, bi, bh):
            return reference.rnn_layer(x, batch_sizes, h, wi, wh, bi, bh, nonlinearity, reverse)
    return _reference_grads(forward, [input, *params], tuple(grads))


_C._set_reference_backward(_reference_backward)
