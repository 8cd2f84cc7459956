"""Functional forms of the multi-layer LSTM, GRU, RNN, IndRNN, LSTM and GRU with their options,
and the layer-normalised LSTM and GRU.

Each handles autocast and calls one multi-layer operator, ``torch.ops.rnnkernels.lstm``, ``gru``
or ``rnn``, or for the others (``indrnn_*``, ``lstm_ext``, ``gru_ext``, ``layernorm_lstm``,
``layernorm_gru``) the generic ``stacked`` (csrc/ops/stacked.cpp). That operator normalises the
input to time-major packed rows plus ``batch_sizes`` (a padded ``[T, B, I]`` batch is the case
where every step has ``B`` rows: a free view), and runs one layer operator per layer and
direction, with dropout between layers.

Arguments (as ``torch._VF.lstm`` & co.):

- ``input``: ``[T, B, I]`` (``[B, T, I]`` if ``batch_first``), or packed rows ``[N, I]`` when
  ``batch_sizes`` (``[T]``, int64, non-increasing, on the CPU) is given;
- ``hx``: ``h0 [L*D, B, P]`` (for the LSTMs a tuple ``(h0, c0 [L*D, B, H])``), layer-major, in
  the order of the packed batch;
- ``weights``: the flat list of ``torch.nn.RNNBase._flat_weights``: per layer and direction
  ``w_ih, w_hh[, b_ih, b_hh]``, then the cell's own (LSTM's ``w_hr``, the layer norms' gains
  and shifts; IndRNN's ``w_hh`` is ``[H]``).

They return ``(output, h_n)`` (the LSTMs: ``(output, (h_n, c_n))``) with ``output`` ``[T, B, D*P]``
(``[B, T, D*P]`` if ``batch_first``, ``[N, D*P]`` when packed).

Under ``torch.autocast`` for the input's device they follow torch.nn's cast policy: the input,
states and weights are cast to the autocast dtype (float64 ones are left alone, as autocast does)
and the operators run in it, accumulating in float32; the casts are part of the graph, so float32
parameters get float32 gradients. The results come out in the dtypes torch.nn's give (see
``autocast_state_dtype``).
"""

import torch

from ._ops import ops

__all__ = ["lstm", "gru", "rnn", "indrnn", "lstm_ext", "gru_ext", "layernorm_lstm",
           "layernorm_gru"]


def autocast_dtype(input):
    """The dtype autocast runs ``input``'s recurrent layer in (``torch.get_autocast_dtype`` of its
    device type), or None when autocast is off there or ``input`` is not eligible (autocast casts
    only floating tensors other than float64)."""
    device_type = input.device.type
    if (input.is_floating_point() and input.dtype != torch.float64
            and torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type)):
        return torch.get_autocast_dtype(device_type)
    return None


def autocast_cast(tensors, dtype):
    """``tensors`` (None allowed) cast to the autocast ``dtype`` where autocast would cast them:
    floating, not float64. The casts are differentiable: gradients come back in each tensor's own
    dtype."""
    return [t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64
            else t for t in tensors]


def _autocast_inputs(input, states, weights):
    """The autocast dtype (or None) and ``input``, ``states`` and ``weights`` cast to it."""
    dtype = autocast_dtype(input)
    if dtype is None:
        return None, input, states, weights
    input, *states = autocast_cast([input, *states], dtype)
    return dtype, input, states, autocast_cast(weights, dtype)


def autocast_state_dtype(dtype, initial_state):
    """The dtype torch.nn's result has, under autocast to ``dtype``, for a state that its cell
    updates from its own previous value (LSTM's c, GRU's h). On CUDA torch.nn runs whole layers
    and cells as autocast ops (cuDNN's RNN, ``lstm_cell`` & co. are on the lower-precision
    list): everything comes out in ``dtype``. On the CPU only the GEMMs are autocast ops, and the
    pointwise update ``f * c + ...`` / ``(1 - z) * n + z * h`` promotes to the initial state's
    dtype, which then carries through every step (except where torch.nn's LSTM runs oneDNN's
    RNN: ``_torch_nn_runs_onednn_lstm``)."""
    if initial_state.device.type == "cpu":
        return torch.promote_types(dtype, initial_state.dtype)
    return dtype


def _onednn_rnn_dtypes():
    """The input dtypes for which torch.nn's CPU LSTM may use oneDNN's RNN (use_mkldnn in
    aten/src/ATen/native/RNN.cpp), read once: torch.compile cannot trace these queries."""
    if not torch.backends.mkldnn.is_available():
        return frozenset()
    dtypes = {torch.float32}
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        dtypes.add(torch.bfloat16)
    if torch.ops.mkldnn._is_mkldnn_fp16_supported():
        dtypes.add(torch.float16)
    return frozenset(dtypes)


_ONEDNN_RNN_DTYPES = _onednn_rnn_dtypes()


def _torch_nn_runs_onednn_lstm(input, packed, projected):
    """Whether torch.nn's LSTM runs ``input`` (before any autocast cast) through oneDNN's RNN,
    whose op (``mkldnn_rnn_layer``) is on autocast's CPU lower-precision list, so that all its
    results come out in the autocast dtype: a padded, unprojected LSTM on the CPU with oneDNN
    enabled, in a dtype oneDNN takes (float16 only without grad mode)."""
    return (input.device.type == "cpu" and not packed and not projected
            and torch.backends.mkldnn.enabled and input.dtype in _ONEDNN_RNN_DTYPES
            and (input.dtype != torch.float16 or not torch.is_grad_enabled()))


def graph_link(tensors):
    """A zero scalar that depends on every tensor given: added to an empty result, it keeps the
    result connected to them (zero gradients), as torch.nn's results are."""
    return sum(t.sum() for t in tensors if t is not None) * 0


def lstm(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False,
         bidirectional=False, batch_first=False, batch_sizes=None):
    """Multi-layer LSTM; a projection (``proj_size``) is present when each layer-direction has a
    ``w_hr`` in ``weights``. Returns ``(output, (h_n, c_n))``."""
    directions = 2 if bidirectional else 1
    projected = len(weights) == num_layers * directions * (2 + (2 if bias else 0) + 1)
    autocast, cast_input, hx_cast, weights = _autocast_inputs(input, list(hx), weights)
    # torch.nn's result dtypes under autocast (decided on the uncast input and c0): all in the
    # autocast dtype where it runs oneDNN's (or on CUDA cuDNN's) RNN; else the cell state keeps
    # c0's dtype, and so does h = o * tanh(c) unless a projection GEMM follows.
    state_dtype = None
    if autocast is not None and not _torch_nn_runs_onednn_lstm(input, batch_sizes is not None,
                                                               projected):
        state_dtype = autocast_state_dtype(autocast, hx[1])
    input, hx = cast_input, hx_cast

    output, h_n, c_n = ops.lstm(input, batch_sizes, hx[0], hx[1], weights, bias, num_layers,
                                dropout, training, bidirectional, batch_first)
    if state_dtype is not None:
        c_n = c_n.to(state_dtype)
        if not projected:
            output, h_n = output.to(state_dtype), h_n.to(state_dtype)
    return output, (h_n, c_n)


def gru(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False,
        bidirectional=False, batch_first=False, batch_sizes=None):
    """Multi-layer GRU. Returns ``(output, h_n)``."""
    h0 = hx
    autocast, input, (hx,), weights = _autocast_inputs(input, [hx], weights)

    output, h_n = ops.gru(input, batch_sizes, hx, weights, bias, num_layers, dropout, training,
                          bidirectional, batch_first)
    if autocast is not None:
        state_dtype = autocast_state_dtype(autocast, h0)
        output, h_n = output.to(state_dtype), h_n.to(state_dtype)
    return output, h_n


def rnn(input, hx, weights, nonlinearity="tanh", bias=True, num_layers=1, dropout=0.0,
        training=False, bidirectional=False, batch_first=False, batch_sizes=None):
    """Multi-layer Elman RNN, ``nonlinearity`` ``"tanh"`` or ``"relu"``. Returns
    ``(output, h_n)``."""
    _, input, (hx,), weights = _autocast_inputs(input, [hx], weights)

    output, h_n = ops.rnn(input, batch_sizes, hx, weights, nonlinearity, bias, num_layers,
                          dropout, training, bidirectional, batch_first)
    return output, h_n


def _stacked(cell, input, states, weights, bias, num_layers, dropout, training, bidirectional,
             batch_first, batch_sizes, scalars=()):
    """``cell`` of ``torch.ops.rnnkernels.stacked``, with its ``scalars``, after autocast's casts
    (of the cell's own params too, as the weights); None in ``weights`` is an absent param of the
    cell's own. Returns ``(output, final states)``, in the autocast dtype under autocast
    (torch.nn has no such layer to follow)."""
    _, input, states, weights = _autocast_inputs(input, states, weights)
    # stacked takes an empty tensor for an absent param of the cell's own.
    weights = [input.new_empty(0) if t is None else t for t in weights]
    return ops.stacked(cell, input, batch_sizes, states, weights, list(scalars), bias, num_layers,
                       dropout, training, bidirectional, batch_first)


def indrnn(input, hx, weights, nonlinearity="relu", bias=True, num_layers=1, dropout=0.0,
           training=False, bidirectional=False, batch_first=False, batch_sizes=None):
    """Multi-layer IndRNN (Li et al. 2018), ``h_t = act(x W_ih^T + b_ih + w_hh * h_{t-1} + b_hh)``
    with ``w_hh`` ``[H]``, ``nonlinearity`` (act) ``"relu"`` or ``"tanh"``; the cell
    ``indrnn_<nonlinearity>`` of ``torch.ops.rnnkernels.stacked``. Returns ``(output, h_n)``, in
    the autocast dtype under autocast."""
    output, (h_n,) = _stacked(f"indrnn_{nonlinearity}", input, [hx], weights, bias, num_layers,
                              dropout, training, bidirectional, batch_first, batch_sizes)
    return output, h_n


def layernorm_lstm(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False,
                   bidirectional=False, batch_first=False, batch_sizes=None, *, extras=None,
                   zoneout=0.0, cell_zoneout=0.0):
    """Multi-layer layer-normalised LSTM (``rnnkernels.LayerNormLSTM``), the cell
    ``layernorm_lstm`` of ``torch.ops.rnnkernels.stacked``; per layer and direction ``weights``
    holds ``w_ih, w_hh[, b_ih, b_hh], ln_w_ih, ln_w_hh [4H], ln_w_c, ln_b_c [H]``. Zoneout of h
    and c: ``extras`` per layer and direction ``(zoneout mask of h [N, H], of c [N, H])``, 0 or
    1, each None where absent (a state's masks come for every layer and direction or for none),
    and ``zoneout``, ``cell_zoneout``, the probabilities, which stand for their expectation where
    that state has no masks (eval). Returns ``(output, (h_n, c_n))``, in the autocast dtype
    under autocast."""
    output, (h_n, c_n) = _stacked("layernorm_lstm", input, list(hx), _with_extras(weights, extras),
                                  bias, num_layers, dropout, training, bidirectional, batch_first,
                                  batch_sizes, _zoneout_scalars(extras, (zoneout, cell_zoneout)))
    return output, (h_n, c_n)


def layernorm_gru(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False,
                  bidirectional=False, batch_first=False, batch_sizes=None, *, extras=None,
                  zoneout=0.0):
    """Multi-layer layer-normalised GRU (``rnnkernels.LayerNormGRU``), the cell ``layernorm_gru``
    of ``torch.ops.rnnkernels.stacked``; per layer and direction ``weights`` holds ``w_ih,
    w_hh[, b_ih, b_hh], ln_w_ih, ln_w_hh [3H]``. Zoneout of h as ``layernorm_lstm``'s: ``extras``
    per layer and direction ``(zoneout mask of h [N, H],)``, and ``zoneout``. Returns
    ``(output, h_n)``, in the autocast dtype under autocast."""
    output, (h_n,) = _stacked("layernorm_gru", input, [hx], _with_extras(weights, extras), bias,
                              num_layers, dropout, training, bidirectional, batch_first,
                              batch_sizes, _zoneout_scalars(extras, (zoneout,)))
    return output, h_n


def _zoneout_scalars(extras, probabilities):
    """The layer-normalised cells' scalars: each state's zoneout probability, or 0 where
    ``extras`` bring that state's masks (which then carry it: the cell keeps ``mask +
    scalar`` of the previous value)."""
    return [0.0 if extras is not None and extras[0][j] is not None else float(p)
            for j, p in enumerate(probabilities)]


# ---------------------------------------------------------------------------------------------
# The options of LSTM and GRU (README, "LSTM and GRU options"): the cells lstm_ext and gru_ext
# (csrc/kernels/traits.h, LSTMExt and GRUExt) of the generic stacked operator; their extras, as
# the layer-normalised cells' zoneout masks, follow each layer and direction's weights.


def _with_extras(weights, extras):
    """torch.nn's ``weights`` with each layer and direction's ``extras`` (the cell's own params,
    None where absent) after its own; ``weights`` as they are without ``extras`` (None)."""
    if extras is None:
        return weights
    per_layer = len(weights) // len(extras)
    flat = []
    for k, own in enumerate(extras):
        flat += [*weights[k * per_layer:(k + 1) * per_layer], *own]
    return flat


def lstm_ext(input, hx, weights, extras, scalars, bias=True, num_layers=1, dropout=0.0,
             training=False, bidirectional=False, batch_first=False, batch_sizes=None):
    """Multi-layer LSTM with peepholes, a cell clip, zoneout and recurrent dropout, as
    ``functional.lstm`` (no projection) plus the cell ``lstm_ext``'s arguments: ``extras`` per
    layer and direction ``(w_ch [3H], zoneout mask of h [N, H], of c [N, H], recurrent mask
    [B, H])``, each None where absent; ``scalars`` ``[cell clip (inf: none), zoneout probability
    of h, of c]``, a probability standing where its mask is absent (eval) and 0 where it is given.
    Returns ``(output, (h_n, c_n))``."""
    output, (h_n, c_n) = _stacked("lstm_ext", input, list(hx), _with_extras(weights, extras),
                                  bias, num_layers, dropout, training, bidirectional, batch_first,
                                  batch_sizes, scalars)
    return output, (h_n, c_n)


def gru_ext(input, hx, weights, extras, scalars, bias=True, num_layers=1, dropout=0.0,
            training=False, bidirectional=False, batch_first=False, batch_sizes=None):
    """Multi-layer GRU with zoneout and recurrent dropout, as ``functional.gru`` plus the cell
    ``gru_ext``'s arguments: ``extras`` per layer and direction ``(zoneout mask of h [N, H],
    recurrent mask [B, H])``, each None where absent; ``scalars`` ``[zoneout probability]``, as
    ``lstm_ext``'s. Returns ``(output, h_n)``."""
    output, (h_n,) = _stacked("gru_ext", input, [hx], _with_extras(weights, extras), bias,
                              num_layers, dropout, training, bidirectional, batch_first,
                              batch_sizes, scalars)
    return output, h_n
