"""The rnnkernels:: operators: loads the compiled library (which defines them and their CPU/CUDA
kernels, csrc/ops.cpp), and registers their fake kernels (for torch.compile and torch.export)
and their autograd formulas.

Shapes (see csrc/ops.cpp): input ``[N, I]`` packed rows with ``batch_sizes [T]``, ``h0 [B, P]``,
``c0 [B, H]``, ``w_ih [G*H, I]``, ``w_hh [G*H, P]``, ``b_ih``/``b_hh [G*H]``, ``w_hr [P, H]``.
"""

import torch

from . import reference

try:
    from . import _C  # noqa: F401  (importing it registers the operators)
except ImportError as error:  # pragma: no cover - depends on how the package was installed
    raise ImportError(
        "rnnkernels: the compiled extension rnnkernels._C is missing or failed to load "
        f"({error}). Build it from the source tree, with torch installed first: "
        "`pip install --no-build-isolation .` (or `pip install --no-build-isolation -e .` "
        "for development)."
    ) from error

ops = torch.ops.rnnkernels


def _grad_or_none(param, grad):
    """The backward operators return an empty tensor for an absent bias or w_hr."""
    return None if param is None else grad


def _zeros_if_none(grad, like):
    return torch.zeros_like(like) if grad is None else grad.contiguous()


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
# Autograd. The backward operators need the forward's output and reserve besides its inputs.
# With grad mode on during the backward (create_graph=True) the gradients are recomputed through
# the reference instead, so that they are differentiable themselves.


def _lstm_setup_context(ctx, inputs, output):
    input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, _train = inputs
    out, _h_n, _c_n, reserve = output
    ctx.mark_non_differentiable(reserve)
    ctx.save_for_backward(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, out, reserve)
    ctx.reverse = reverse


def _lstm_backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_reserve):
    input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, out, reserve = ctx.saved_tensors
    grad_output = _zeros_if_none(grad_output, out)
    grad_h_n = _zeros_if_none(grad_h_n, h0)
    grad_c_n = _zeros_if_none(grad_c_n, c0)
    params = (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    if torch.is_grad_enabled():
        grads = _reference_grads(
            lambda x, h, c, wi, wh, bi, bh, wr: reference.lstm_layer(
                x, batch_sizes, h, c, wi, wh, bi, bh, wr, ctx.reverse
            ),
            params,
            (grad_output, grad_h_n, grad_c_n),
        )
    else:
        grads = ops.lstm_layer_backward(
            grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, c0, w_ih, w_hh, b_ih,
            b_hh, w_hr, out, reserve, ctx.reverse,
        )
        grads = [_grad_or_none(p, g) for p, g in zip(params, grads)]
    g_input, g_h0, g_c0, g_w_ih, g_w_hh, g_b_ih, g_b_hh, g_w_hr = grads
    return g_input, None, g_h0, g_c0, g_w_ih, g_w_hh, g_b_ih, g_b_hh, g_w_hr, None, None


def _gru_setup_context(ctx, inputs, output):
    input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse, _train = inputs
    out, _h_n, reserve = output
    ctx.mark_non_differentiable(reserve)
    ctx.save_for_backward(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, out, reserve)
    ctx.reverse = reverse


def _gru_backward(ctx, grad_output, grad_h_n, _grad_reserve):
    input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, out, reserve = ctx.saved_tensors
    grad_output = _zeros_if_none(grad_output, out)
    grad_h_n = _zeros_if_none(grad_h_n, h0)
    params = (input, h0, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled():
        grads = _reference_grads(
            lambda x, h, wi, wh, bi, bh: reference.gru_layer(
                x, batch_sizes, h, wi, wh, bi, bh, ctx.reverse
            ),
            params,
            (grad_output, grad_h_n),
        )
    else:
        grads = ops.gru_layer_backward(
            grad_output, grad_h_n, input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, out, reserve,
            ctx.reverse,
        )
        grads = [_grad_or_none(p, g) for p, g in zip(params, grads)]
    g_input, g_h0, g_w_ih, g_w_hh, g_b_ih, g_b_hh = grads
    return g_input, None, g_h0, g_w_ih, g_w_hh, g_b_ih, g_b_hh, None, None


def _rnn_setup_context(ctx, inputs, output):
    input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse, _train = inputs
    out, _h_n, reserve = output
    ctx.mark_non_differentiable(reserve)
    ctx.save_for_backward(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, out)
    ctx.nonlinearity = nonlinearity
    ctx.reverse = reverse


def _rnn_backward(ctx, grad_output, grad_h_n, _grad_reserve):
    input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, out = ctx.saved_tensors
    grad_output = _zeros_if_none(grad_output, out)
    grad_h_n = _zeros_if_none(grad_h_n, h0)
    params = (input, h0, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled():
        grads = _reference_grads(
            lambda x, h, wi, wh, bi, bh: reference.rnn_layer(
                x, batch_sizes, h, wi, wh, bi, bh, ctx.nonlinearity, ctx.reverse
            ),
            params,
            (grad_output, grad_h_n),
        )
    else:
        grads = ops.rnn_layer_backward(
            grad_output, grad_h_n, input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh,
            ctx.nonlinearity, out, ctx.reverse,
        )
        grads = [_grad_or_none(p, g) for p, g in zip(params, grads)]
    g_input, g_h0, g_w_ih, g_w_hh, g_b_ih, g_b_hh = grads
    return g_input, None, g_h0, g_w_ih, g_w_hh, g_b_ih, g_b_hh, None, None, None


torch.library.register_autograd(
    "rnnkernels::lstm_layer", _lstm_backward, setup_context=_lstm_setup_context
)
torch.library.register_autograd(
    "rnnkernels::gru_layer", _gru_backward, setup_context=_gru_setup_context
)
torch.library.register_autograd(
    "rnnkernels::rnn_layer", _rnn_backward, setup_context=_rnn_setup_context
)
