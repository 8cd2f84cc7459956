"""Drop-in replacements of torch.nn.LSTM, GRU, RNN and their cells, running rnnkernels' fused
operators.

The layers subclass ``torch.nn.RNNBase`` (not ``nn.LSTM`` & co., which torch.compile refuses to
trace): RNNBase keeps the parameters, their names and order, initialisation, ``_flat_weights``,
``all_weights``, ``state_dict``, ``repr`` and pickling exactly as torch.nn's. The cells subclass
the torch.nn cells and replace only ``forward``. Argument checks raise torch.nn's exception types
and messages; where torch.nn checks nothing (a PackedSequence with the wrong feature size into an
LSTM) these check as for a padded input.
"""

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import functional
from ._ops import ops

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"]


class _Recurrent(nn.RNNBase):
    """The forward shared by LSTM, GRU and RNN: torch.nn's input handling around
    ``self._run(input, hx, batch_sizes) -> (output, hidden)``."""

    def _check_hx_dims(self, hx, is_batched):
        expected = 3 if is_batched else 2
        if hx.dim() != expected:
            kind = "batched 3-D" if is_batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {kind} input, hx should also be {expected}-D but got {hx.dim()}-D tensor"
            )

    def _input_dims_message(self, input):
        return f"{self.mode}: Expected input to be 2D or 3D, got {input.dim()}D instead"

    def _zero_state(self, input, batch):
        directions = 2 if self.bidirectional else 1
        return torch.zeros(self.num_layers * directions, batch, self.hidden_size,
                           dtype=input.dtype, device=input.device)

    def _unsqueeze_state(self, hx):
        return hx.unsqueeze(1)

    def _squeeze_state(self, hidden):
        return hidden.squeeze(1)

    def _check_state(self, input, hx):
        """What torch.nn's check_forward_args leaves to its C++ side: the states' dtype."""
        # Under autocast the functional casts input and states to one dtype, as torch.nn's does.
        if hx.dtype != input.dtype and functional.autocast_dtype(input) is None:
            raise RuntimeError(
                f"{type(self).__name__}: expected hx to have the dtype of input ({input.dtype}), "
                f"got {hx.dtype}"
            )

    def forward(self, input, hx=None):
        self._update_flat_weights()
        orig_input = input
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = orig_input
            batch = int(batch_sizes[0])
        else:
            batch_sizes = sorted_indices = unsorted_indices = None
            if input.dim() not in (2, 3):
                raise ValueError(self._input_dims_message(input))
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            if hx is not None:
                self._check_hx_dims(hx, is_batched)
                if not is_batched:
                    hx = self._unsqueeze_state(hx)
            batch = input.size(batch_dim)
        if hx is None:
            hx = self._zero_state(input, batch)
        # Checked in the caller's order, before the permutation indexes hx with it.
        self.check_forward_args(input, hx, batch_sizes)
        self._check_state(input, hx)
        hx = self.permute_hidden(hx, sorted_indices)

        output, hidden = self._run(input, hx, batch_sizes)

        if isinstance(orig_input, PackedSequence):
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
        elif not is_batched:
            output = output.squeeze(batch_dim)
            hidden = self._squeeze_state(hidden)
        return output, self.permute_hidden(hidden, unsorted_indices)

    def _options(self):
        return dict(
            bias=self.bias,
            num_layers=self.num_layers,
            dropout=self.dropout,
            training=self.training,
            bidirectional=self.bidirectional,
            batch_first=self.batch_first,
        )


class LSTM(_Recurrent):
    """Drop-in ``torch.nn.LSTM``: same arguments (``input_size, hidden_size, num_layers=1,
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, device=None,
    dtype=None``), parameters, inputs and outputs; runs ``rnnkernels::lstm_layer``."""

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    # torch.nn.LSTM's own (h, c) handling, reused as is.
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden

    def _check_hx_dims(self, hx, is_batched):
        expected = 3 if is_batched else 2
        if hx[0].dim() != expected or hx[1].dim() != expected:
            kind = "batched 3-D" if is_batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {kind} input, hx and cx should also be {expected}-D but got "
                f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
            )

    def _zero_state(self, input, batch):
        directions = 2 if self.bidirectional else 1
        shape = (self.num_layers * directions, batch)
        state = self.proj_size if self.proj_size > 0 else self.hidden_size
        return (
            torch.zeros(*shape, state, dtype=input.dtype, device=input.device),
            torch.zeros(*shape, self.hidden_size, dtype=input.dtype, device=input.device),
        )

    def _unsqueeze_state(self, hx):
        return hx[0].unsqueeze(1), hx[1].unsqueeze(1)

    def _squeeze_state(self, hidden):
        return hidden[0].squeeze(1), hidden[1].squeeze(1)

    def _check_state(self, input, hx):
        if len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")
        super()._check_state(input, hx[0])
        super()._check_state(input, hx[1])

    def _run(self, input, hx, batch_sizes):
        return functional.lstm(input, hx, self._flat_weights, batch_sizes=batch_sizes,
                               **self._options())


class GRU(_Recurrent):
    """Drop-in ``torch.nn.GRU``: same arguments (``input_size, hidden_size, num_layers=1,
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None``),
    parameters, inputs and outputs; runs ``rnnkernels::gru_layer``."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def _run(self, input, hx, batch_sizes):
        return functional.gru(input, hx, self._flat_weights, batch_sizes=batch_sizes,
                              **self._options())


class RNN(_Recurrent):
    """Drop-in ``torch.nn.RNN``: same arguments (``input_size, hidden_size, num_layers=1,
    nonlinearity='tanh', bias=True, batch_first=False, dropout=0.0, bidirectional=False,
    device=None, dtype=None``), parameters, inputs and outputs; runs ``rnnkernels::rnn_layer``."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        # As torch.nn.RNN: nonlinearity is the 4th positional argument, before bias.
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(
                f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__(mode, *args, **kwargs)

    def _input_dims_message(self, input):
        return f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead"

    def _run(self, input, hx, batch_sizes):
        return functional.rnn(input, hx, self._flat_weights, nonlinearity=self.nonlinearity,
                              batch_sizes=batch_sizes, **self._options())


# ---------------------------------------------------------------------------------------------
# Cells: one step of the layer operator (batch_sizes = [B]).

_SCALAR_TYPE_NAMES = {
    torch.float32: "Float",
    torch.float64: "Double",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
}


def _check_cell(cell, input, states):
    """torch.nn's cell checks (ATen's messages), before any kernel runs."""
    if input.size(1) != cell.input_size:
        raise RuntimeError(
            f"input has inconsistent input_size: got {input.size(1)} expected {cell.input_size}"
        )
    for label, state in enumerate(states):
        if input.size(0) != state.size(0):
            raise RuntimeError(
                f"Input batch size {input.size(0)} doesn't match hidden{label} batch size "
                f"{state.size(0)}"
            )
        if state.size(1) != cell.hidden_size:
            raise RuntimeError(
                f"hidden{label} has inconsistent hidden_size: got {state.size(1)}, expected "
                f"{cell.hidden_size}"
            )
    if functional.autocast_dtype(input) is not None:
        return  # _cell_step casts input, states and weights to the autocast dtype
    weight_dtype = cell.weight_ih.dtype
    for tensor in (input, *states):
        if tensor.dtype != weight_dtype:
            names = [_SCALAR_TYPE_NAMES.get(d, str(d)) for d in (tensor.dtype, weight_dtype)]
            raise RuntimeError(
                f"mat1 and mat2 must have the same dtype, but got {names[0]} and {names[1]}"
            )


def _cell_step(cell, input, states, run, carried_state=None):
    """Runs ``run(input, batch_sizes, states, weights, train)`` as a one-step layer, with
    ``weights`` ``(w_ih, w_hh, b_ih, b_hh)``; the input is ``[B, I]`` and states ``[B, H]``.
    Under autocast the step runs in the autocast dtype, and its results come out in torch.nn's
    dtype: that of ``functional.autocast_state_dtype`` for the cells whose update carries
    ``carried_state`` (LSTMCell's c, on which h depends, GRUCell's h), else the autocast dtype."""
    batch_sizes = torch.tensor([input.size(0)], dtype=torch.int64)
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    tensors = (input, *states, *weights)
    train = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    autocast = functional.autocast_dtype(input)
    if autocast is not None:
        input, *states = functional.autocast_cast([input, *states], autocast)
        weights = functional.autocast_cast(weights, autocast)
    result = run(input.contiguous(), batch_sizes, [s.contiguous() for s in states], weights, train)
    if autocast is None:
        return result
    dtype = (autocast if carried_state is None
             else functional.autocast_state_dtype(autocast, carried_state))
    return tuple(r.to(dtype) for r in result) if isinstance(result, tuple) else result.to(dtype)


def _check_cell_dims(name, input, labelled_states):
    """torch.nn's rank checks of a cell's input and ``(label, state)`` pairs."""
    if input.dim() not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    for label, state in labelled_states:
        if state.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected {label} to be 1D or 2D, got {state.dim()}D instead")


class LSTMCell(nn.LSTMCell):
    """Drop-in ``torch.nn.LSTMCell`` running ``rnnkernels::lstm_layer`` for one step."""

    def forward(self, input, hx=None):
        _check_cell_dims("LSTMCell", input,
                         [] if hx is None else [(f"hx[{i}]", v) for i, v in enumerate(hx)])
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype,
                                device=input.device)
            hx = (zeros, zeros)
        elif not is_batched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        _check_cell(self, input, hx)
        if input.size(0) == 0:
            link = functional.graph_link([input, *hx, *self.parameters()])
            ret = (hx[0] + link, hx[1] + link)
        else:
            ret = _cell_step(
                self, input, hx,
                lambda x, sizes, states, weights, train: ops.lstm_layer(
                    x, sizes, states[0], states[1], *weights, None, False, train)[1:3],
                carried_state=hx[1])
        if not is_batched:
            ret = (ret[0].squeeze(0), ret[1].squeeze(0))
        return tuple(ret)


class GRUCell(nn.GRUCell):
    """Drop-in ``torch.nn.GRUCell`` running ``rnnkernels::gru_layer`` for one step."""

    def forward(self, input, hx=None):
        _check_cell_dims("GRUCell", input, [] if hx is None else [("hidden", hx)])
        return _single_state_cell(
            self, input, hx,
            lambda x, sizes, states, weights, train: ops.gru_layer(
                x, sizes, states[0], *weights, False, train)[1],
            carries_state=True)


class RNNCell(nn.RNNCell):
    """Drop-in ``torch.nn.RNNCell`` running ``rnnkernels::rnn_layer`` for one step."""

    def forward(self, input, hx=None):
        _check_cell_dims("RNNCell", input, [] if hx is None else [("hidden", hx)])
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return _single_state_cell(
            self, input, hx,
            lambda x, sizes, states, weights, train: ops.rnn_layer(
                x, sizes, states[0], *weights, self.nonlinearity, False, train)[1],
            carries_state=False)


def _single_state_cell(cell, input, hx, run, carries_state):
    """The forward of GRUCell and RNNCell; ``carries_state``: whether the update carries ``hx``
    outside the GEMMs (GRU), which decides the result's dtype under autocast (``_cell_step``)."""
    is_batched = input.dim() == 2
    if not is_batched:
        input = input.unsqueeze(0)
    if hx is None:
        hx = torch.zeros(input.size(0), cell.hidden_size, dtype=input.dtype, device=input.device)
    elif not is_batched:
        hx = hx.unsqueeze(0)
    _check_cell(cell, input, (hx,))
    if input.size(0) == 0:
        ret = hx + functional.graph_link([input, hx, *cell.parameters()])
    else:
        ret = _cell_step(cell, input, (hx,), run, carried_state=hx if carries_state else None)
    return ret if is_batched else ret.squeeze(0)
