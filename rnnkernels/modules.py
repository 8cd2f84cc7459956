"""Drop-in replacements of torch.nn.LSTM, GRU, RNN and their cells, running rnnkernels' fused
operators.

The layers subclass ``torch.nn.LSTM``, ``GRU`` and ``RNN`` and the cells the torch.nn cells, so
``isinstance`` checks, parameters (names, order, initialisation), ``_flat_weights``,
``all_weights``, ``state_dict``, ``repr`` and pickling are torch.nn's; only ``forward`` is
replaced. Argument checks raise torch.nn's exception types and messages; where torch.nn checks
nothing (a PackedSequence with the wrong feature size into an LSTM) these check as for a padded
input.

Two consequences of being torch.nn's classes:

- ``torch.onnx.export`` runs torch.nn's own forward (our operators have no ONNX form), so a model
  exports to the standard ONNX ``LSTM``/``GRU``/``RNN`` operators as torch.nn's does; an LSTM
  with a projection, which ONNX's LSTM lacks, exports as ``rnnkernels.reference``'s steps.
- TorchDynamo graph-breaks around instances of ``nn.LSTM``/``GRU``/``RNN`` unless
  ``torch._dynamo.config.allow_rnn = True``; with that flag set by the user, ``torch.compile``
  traces our operators. The package never sets it: it would change how the user's own torch.nn
  layers compile.

``LSTM`` and ``GRU`` also take options torch.nn lacks (peepholes, a cell clip, zoneout,
recurrent dropout, weight drop; ``_Options``), keyword-only and off by default: off, nothing of
the above changes.

``IndRNN``, ``LayerNormLSTM`` and ``LayerNormGRU`` have no torch.nn class: each is a
``torch.nn.RNNBase`` (not an ``RNN``, ``LSTM`` or ``GRU``, so Dynamo traces it without
``allow_rnn``) with the arguments, parameter names, initialisation, inputs, outputs and checks of
torch.nn.RNN (IndRNN, whose recurrent weights are vectors), LSTM and GRU (the layer-normalised
ones, with their norms' parameters added, and zoneout as a keyword-only option off by default);
each exports to ONNX as ``rnnkernels.reference``'s steps.
"""

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import functional, reference
from ._ops import _C, ops

__all__ = ["LSTM", "GRU", "RNN", "IndRNN", "LayerNormLSTM", "LayerNormGRU", "LSTMCell", "GRUCell",
           "RNNCell"]


def _scalar_type_name(dtype):
    """ATen's name of ``dtype`` ("Float", "Double", "Long", ...), as its error messages use."""
    return torch.empty(0, dtype=dtype).type().rsplit(".", 1)[1].removesuffix("Tensor")


def _mm_dtype_error(a, b):
    """The error ATen's GEMM raises for operands of two dtypes."""
    return RuntimeError(f"mat1 and mat2 must have the same dtype, but got "
                        f"{_scalar_type_name(a)} and {_scalar_type_name(b)}")


def _exporting_to_onnx():
    """Whether torch.onnx.export (either exporter) is tracing this call. Its TorchScript exporter
    traces under the JIT tracer and its dynamo exporter under torch.export, so those cheap checks
    go first: ``torch.onnx.is_in_onnx_export`` imports two modules on every call, which costs a
    call of a single step a few microseconds."""
    if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
        return False
    return not torch.compiler.is_dynamo_compiling() and torch.onnx.is_in_onnx_export()


class _Recurrent(nn.RNNBase):
    """The forward shared by LSTM, GRU and RNN, placed before the torch.nn class in the bases:
    torch.nn's input handling around ``self._run(input, hx, batch_sizes) -> (output, hidden)``."""

    def _weights_have_changed(self):
        """torch.nn's check of whether a weight was replaced since ``_flat_weights`` was made
        (``torch.func.functional_call`` swaps them), reading a weight that is a parameter from
        ``_parameters``, as ``getattr`` would, without ``nn.Module.__getattr__``'s cost (twice
        per weight in torch.nn's: 8 of a single step's 95 microseconds here, 2 this way); any
        other (a parametrization's property) by ``getattr``, once."""
        parameters = self._parameters
        for ref, name in zip(self._flat_weight_refs, self._flat_weights_names, strict=True):
            weight = parameters[name] if name in parameters else getattr(self, name, None)
            if weight is not None and ref is not None and ref() is not weight:
                return True
        return False

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

    def _check_packed(self, input, hx):
        """Checks of a PackedSequence's data and given state (hx, or None) that torch.nn makes
        before its own (check_forward_args), with its exception types."""

    def _onnx_has_no_operator(self):
        """Whether ONNX lacks an operator for this layer (so torch.nn cannot export it)."""
        return False

    def _lean_cell(self):
        """The cell of this call's lean path (see forward), or None: it has none."""
        return None

    def forward(self, input, hx=None):
        # The lean path: a plain call (the module's own layer, ``_lean_cell``, outside
        # torch.compile and torch.export, with tensor arguments that torch.nn's checks pass) in
        # one crossing into C++, csrc/python_forward.cpp; None back for any other call, which
        # the Python path below runs (and rejects with torch.nn's errors). A single step's call
        # costs half as much this way (docs/DESIGN.md, "The lean path").
        cell = self._lean_cell()
        if cell is not None and not torch.compiler.is_compiling():
            result = _C._forward(self, cell, input, hx)
            if result is not None:
                return result
        if _exporting_to_onnx() and not self._onnx_has_no_operator():
            return super().forward(input, hx)
        self._update_flat_weights()
        orig_input = input
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = orig_input
            # batch_sizes[0] itself, as torch.nn: a hand-built PackedSequence with float sizes
            # fails to make the zero state with torch.nn's TypeError.
            batch = batch_sizes[0]
            self._check_packed(input, hx)
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
        if batch_sizes is not None and batch_sizes.dtype != torch.int64:
            raise RuntimeError(f"expected scalar type Long but found "
                               f"{_scalar_type_name(batch_sizes.dtype)}")
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


class _LSTMStates(_Recurrent):
    """The states of an LSTM, ``(h, c)``, as torch.nn.LSTM takes, checks and returns them: for
    ``LSTM`` and ``LayerNormLSTM`` (which is no torch.nn.LSTM, so it takes torch.nn.LSTM's
    checks and permutation from here)."""

    check_forward_args = nn.LSTM.check_forward_args
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
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

    def _check_packed(self, input, hx):
        # torch.nn's LSTM hands packed input to ATen unchecked, which indexes the states' third
        # dimension and multiplies the input by the weights first.
        for state in () if hx is None else hx:
            if state.dim() < 3:
                raise IndexError(f"Dimension out of range (expected to be in range of "
                                 f"[{-state.dim()}, {state.dim() - 1}], but got 2)")
        weight = self._flat_weights[0]
        if input.dtype != weight.dtype and functional.autocast_dtype(input) is None:
            raise _mm_dtype_error(input.dtype, weight.dtype)

    def _check_state(self, input, hx):
        if len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")
        super()._check_state(input, hx[0])
        super()._check_state(input, hx[1])


class _Zoneout:
    """Zoneout (Krueger et al. 2016) of a layer's states, off by default: for LSTM and GRU (with
    their other options, ``_Options``) and the layer-normalised layers. Class attributes hold the
    defaults, so that a layer pickled without the options loads. A subclass lists its options
    with their defaults in ``_DEFAULTS``."""

    zoneout = 0.0

    def _set_probabilities(self, **probabilities):
        """Checks and sets probabilities: a zoneout's may be 1 (a state that never changes), a
        dropout's not (its scale is 1 / (1 - p))."""
        for name, p in probabilities.items():
            closed = "zoneout" in name
            if (not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p
                    or not (p <= 1 if closed else p < 1)):
                interval = "[0, 1]" if closed else "[0, 1)"
                raise ValueError(f"{type(self).__name__}: {name} must be a probability in "
                                 f"{interval}, got {p!r}")
            setattr(self, name, float(p))

    def extra_repr(self):
        options = "".join(f", {name}={getattr(self, name)!r}" for name, default in self._DEFAULTS
                          if getattr(self, name) != default)
        return super().extra_repr() + options

    def _draw(self, input, shape, p):
        """A mask ``[*shape, H]`` in ``input``'s dtype and device, 1 with probability ``p``, else
        0, from torch's default generator."""
        return torch.empty(*shape, self.hidden_size, dtype=input.dtype,
                           device=input.device).bernoulli_(p)

    def _zoneout_masks(self, input, batch_sizes, zoneouts):
        """This call's zoneout masks of one layer and direction: for each probability of
        ``zoneouts`` a mask ``[N, H]`` (1, keep the previous value, with that probability); None
        where the probability is 0, and all None in eval."""
        rows = input.shape[0] if batch_sizes is not None else input.shape[0] * input.shape[1]
        return [self._draw(input, (rows,), p) if self.training and p > 0 else None
                for p in zoneouts]

    def _layer_count(self):
        """Layers times directions: how many layers' masks a call draws."""
        return self.num_layers * (2 if self.bidirectional else 1)

    def _zoneout_scalar(self, p):
        """A zoneout probability as the cell takes it: p in eval; in training 0, the mask
        carrying it."""
        return 0.0 if self.training else p


class _Options(_Zoneout):
    """The options of LSTM and GRU that torch.nn lacks (README, "LSTM and GRU options"), each off
    by default, and then the layer is torch.nn's in everything (parameters, state_dict, the
    operators it runs): zoneout (``_Zoneout``), recurrent dropout and weight drop. A subclass
    says whether its options need its extended cell (``_extended``)."""

    recurrent_dropout = weight_drop = 0.0

    def _dropping_weights(self):
        return self.training and self.weight_drop > 0

    def _weights(self):
        """This call's weights: torch.nn's, with each ``weight_hh`` dropped in training by
        ``weight_drop`` (DropConnect: one mask per weight and call, scaled by 1 / (1 - p); the
        gradients reach the raw weight)."""
        if not self._dropping_weights():
            return self._flat_weights
        return [F.dropout(w, self.weight_drop) if name.startswith("weight_hh") else w
                for name, w in zip(self._flat_weights_names, self._flat_weights)]

    def _masks(self, input, h0, batch_sizes, zoneouts):
        """This call's masks, per layer and direction: the zoneout masks of ``zoneouts``
        (``_zoneout_masks``), then the recurrent dropout mask ``[B, H]`` (0, or 1 / (1 - p) with
        probability 1 - p, one per sequence and unit for every step), None where off and in
        eval. Drawn from torch's default generator, layer by layer in this order."""
        keep = 1 - self.recurrent_dropout
        masks = []
        for _ in range(self._layer_count()):
            layer = self._zoneout_masks(input, batch_sizes, zoneouts)
            recurrent = (self._draw(input, (h0.shape[1],), keep) / keep
                         if self.training and self.recurrent_dropout > 0 else None)
            masks.append((*layer, recurrent))
        return masks

    def _onnx_has_no_operator(self):
        return self._extended()


class LSTM(_Options, _LSTMStates, nn.LSTM):
    """Drop-in ``torch.nn.LSTM`` (a subclass): same arguments (``input_size, hidden_size,
    num_layers=1, bias=True, batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
    device=None, dtype=None``), parameters, inputs and outputs; runs ``rnnkernels::lstm``.

    Options, keyword-only, each off by default (README, "LSTM and GRU options"): ``peephole``
    (parameters ``weight_ch_l{k}[_reverse]`` ``[3 * hidden_size]``, (p_i, p_f, p_o)),
    ``cell_clip`` (a bound, or None), ``zoneout`` (h) and ``cell_zoneout`` (c) probabilities,
    ``recurrent_dropout``, ``weight_drop``. All but ``weight_drop`` run the cell ``lstm_ext`` of
    ``rnnkernels::stacked`` and do not combine with ``proj_size``."""

    peephole = False
    cell_clip = None
    cell_zoneout = 0.0
    _DEFAULTS = (("peephole", False), ("cell_clip", None), ("zoneout", 0.0),
                 ("cell_zoneout", 0.0), ("recurrent_dropout", 0.0), ("weight_drop", 0.0))

    def __init__(self, *args, peephole=False, cell_clip=None, zoneout=0.0, cell_zoneout=0.0,
                 recurrent_dropout=0.0, weight_drop=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_probabilities(zoneout=zoneout, cell_zoneout=cell_zoneout,
                                recurrent_dropout=recurrent_dropout, weight_drop=weight_drop)
        if cell_clip is not None and (not isinstance(cell_clip, numbers.Real)
                                      or isinstance(cell_clip, bool) or not cell_clip > 0):
            raise ValueError(f"LSTM: cell_clip must be a positive number or None, got "
                             f"{cell_clip!r}")
        self.cell_clip = None if cell_clip is None else float(cell_clip)
        self.peephole = bool(peephole)
        if self.proj_size > 0 and self._extended():
            raise ValueError("LSTM: peephole, cell_clip, zoneout, cell_zoneout and "
                             "recurrent_dropout do not combine with proj_size")
        # Initialised as the other parameters, uniform(-1/sqrt(hidden_size), 1/sqrt(...)).
        bound = self.hidden_size**-0.5
        for name in self._peephole_names():
            weight = nn.Parameter(self.weight_ih_l0.new_empty(3 * self.hidden_size))
            nn.init.uniform_(weight, -bound, bound)
            setattr(self, name, weight)

    def _onnx_has_no_operator(self):
        # ONNX's LSTM has no projection: torch.nn's TorchScript exporter refuses such a layer and
        # its dynamo exporter writes a graph onnxruntime rejects. Ours exports the reference's
        # steps (standard operators, unrolled to the traced sequence length), as for the options.
        return self.proj_size > 0 or self._extended()

    def _extended(self):
        return (self.peephole or self.cell_clip is not None or self.zoneout > 0
                or self.cell_zoneout > 0 or self.recurrent_dropout > 0)

    def _lean_cell(self):
        return None if self._extended() or self._dropping_weights() else "lstm"

    def _peephole_names(self):
        if not self.peephole:
            return []
        suffixes = ("", "_reverse") if self.bidirectional else ("",)
        return [f"weight_ch_l{layer}{suffix}" for layer in range(self.num_layers)
                for suffix in suffixes]

    def _run(self, input, hx, batch_sizes):
        weights = self._weights()
        exporting = self._onnx_has_no_operator() and _exporting_to_onnx()
        if not self._extended():
            run = reference.lstm if exporting else functional.lstm
            return run(input, hx, weights, batch_sizes=batch_sizes, **self._options())
        peepholes = [getattr(self, name) for name in self._peephole_names()]
        masks = self._masks(input, hx[0], batch_sizes, (self.zoneout, self.cell_zoneout))
        extras = [(peepholes[k] if peepholes else None, *layer) for k, layer in enumerate(masks)]
        if exporting:
            return reference.lstm(input, hx, weights, batch_sizes=batch_sizes, extras=extras,
                                  cell_clip=self.cell_clip, zoneout=self.zoneout,
                                  cell_zoneout=self.cell_zoneout, **self._options())
        scalars = [math.inf if self.cell_clip is None else self.cell_clip,
                   self._zoneout_scalar(self.zoneout), self._zoneout_scalar(self.cell_zoneout)]
        return functional.lstm_ext(input, hx, weights, extras, scalars, batch_sizes=batch_sizes,
                                   **self._options())


class GRU(_Options, _Recurrent, nn.GRU):
    """Drop-in ``torch.nn.GRU`` (a subclass): same arguments (``input_size, hidden_size,
    num_layers=1, bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None,
    dtype=None``), parameters, inputs and outputs; runs ``rnnkernels::gru``.

    Options, keyword-only, each off by default (README, "LSTM and GRU options"): ``zoneout``,
    ``recurrent_dropout``, ``weight_drop``. The first two run the cell ``gru_ext`` of
    ``rnnkernels::stacked``."""

    _DEFAULTS = (("zoneout", 0.0), ("recurrent_dropout", 0.0), ("weight_drop", 0.0))

    def __init__(self, *args, zoneout=0.0, recurrent_dropout=0.0, weight_drop=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_probabilities(zoneout=zoneout, recurrent_dropout=recurrent_dropout,
                                weight_drop=weight_drop)

    def _extended(self):
        return self.zoneout > 0 or self.recurrent_dropout > 0

    def _lean_cell(self):
        return None if self._extended() or self._dropping_weights() else "gru"

    def _run(self, input, hx, batch_sizes):
        weights = self._weights()
        if not self._extended():
            return functional.gru(input, hx, weights, batch_sizes=batch_sizes, **self._options())
        extras = self._masks(input, hx, batch_sizes, (self.zoneout,))
        if _exporting_to_onnx():
            return reference.gru(input, hx, weights, batch_sizes=batch_sizes, extras=extras,
                                 zoneout=self.zoneout, **self._options())
        return functional.gru_ext(input, hx, weights, extras, [self._zoneout_scalar(self.zoneout)],
                                  batch_sizes=batch_sizes, **self._options())


class RNN(_Recurrent, nn.RNN):
    """Drop-in ``torch.nn.RNN`` (a subclass): same arguments (``input_size, hidden_size,
    num_layers=1, nonlinearity='tanh', bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None``), parameters, inputs and outputs; runs
    ``rnnkernels::rnn``."""

    def _input_dims_message(self, input):
        return f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead"

    def _lean_cell(self):
        return "rnn_relu" if self.mode == "RNN_RELU" else "rnn_tanh"

    def _run(self, input, hx, batch_sizes):
        # The mode fixed at construction, as torch.nn's: a later change of self.nonlinearity
        # changes nothing.
        nonlinearity = "relu" if self.mode == "RNN_RELU" else "tanh"
        return functional.rnn(input, hx, self._flat_weights, nonlinearity=nonlinearity,
                              batch_sizes=batch_sizes, **self._options())


class _NewLayer(_Recurrent):
    """A layer torch.nn has no class for: a ``torch.nn.RNNBase`` of torch.nn's ``mode`` (not an
    RNN, LSTM or GRU, so Dynamo traces it without ``allow_rnn``) with that mode's arguments,
    checks, inputs and outputs, and its parameters per layer and direction as
    ``_layer_parameters`` changes torch.nn's. Runs ``functional.<_function>``; exports to ONNX
    as ``reference.<_function>``'s steps."""

    _function = None

    def __init__(self, mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                 bidirectional, device, dtype):
        # torch.nn's argument checks and parameters, on the meta device: the layer's changes come
        # before anything is allocated, then all are allocated and initialised (reset_parameters).
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device="meta", dtype=dtype)
        self.mode = type(self).__name__
        layers = []
        for names in self._all_weights:
            layers.append(self._layer_parameters(names[0].removeprefix("weight_ih"),
                                                 [(name, getattr(self, name)) for name in names]))
            for name in names:
                delattr(self, name)
        # Registered layer by layer, in torch.nn's order; to_empty then rebuilds _flat_weights.
        self._all_weights = [[name for name, _ in layer] for layer in layers]
        self._flat_weights_names = [name for names in self._all_weights for name in names]
        for layer in layers:
            for name, param in layer:
                self.register_parameter(name, param)
        self.to_empty(device=torch.get_default_device() if device is None else device)
        self.reset_parameters()

    def _layer_parameters(self, suffix, params):
        """The parameters of the layer and direction of ``suffix`` (``"_l0"``, ``"_l1_reverse"``)
        from torch.nn's, ``[(name, Parameter)]`` in order, all on the meta device."""
        return params

    def flatten_parameters(self):
        """Nothing to lay out: cuDNN, whose weight buffer torch.nn's flattening fills, has no
        such layer."""

    def _onnx_has_no_operator(self):
        return True

    def _run(self, input, hx, batch_sizes):
        forms = reference if _exporting_to_onnx() else functional
        return getattr(forms, self._function)(input, hx, self._flat_weights,
                                              batch_sizes=batch_sizes, **self._options(),
                                              **self._call_options(input, batch_sizes))

    def _call_options(self, input, batch_sizes):
        """Keyword arguments of this call's functional (and reference) form beyond
        ``_options``."""
        return {}


class IndRNN(_NewLayer):
    """Independently recurrent network (Li et al. 2018), ``h_t = act(x_t W_ih^T + b_ih + w_hh *
    h_{t-1} + b_hh)``, ``act`` relu or tanh: torch.nn.RNN's arguments (``input_size,
    hidden_size, num_layers=1, nonlinearity='relu', bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None``), inputs, outputs and parameter names, but
    each ``weight_hh_l{k}`` is ``[hidden_size]``, one recurrent weight per unit (no recurrent
    GEMM). Runs the ``indrnn_relu`` or ``indrnn_tanh`` cell of ``rnnkernels::stacked``."""

    _function = "indrnn"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="relu", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        # Initialised as torch.nn.RNN's, uniform(-1/sqrt(hidden_size), 1/sqrt(hidden_size)).
        super().__init__("RNN_TANH", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device, dtype)
        self.nonlinearity = nonlinearity

    def _layer_parameters(self, suffix, params):
        # One recurrent weight per unit: weight_hh a vector.
        return [(name, nn.Parameter(param.new_empty(self.hidden_size))
                 if name.startswith("weight_hh") else param) for name, param in params]

    def extra_repr(self):
        options = super().extra_repr()
        if self.nonlinearity == "relu":
            return options
        return f"{options}, nonlinearity={self.nonlinearity!r}"

    def _options(self):
        return dict(super()._options(), nonlinearity=self.nonlinearity)


class _LayerNormLayer(_Zoneout, _NewLayer):
    """A layer-normalised layer (Ba et al. 2016): torch.nn's ``_torch_mode`` layer's arguments
    (no ``proj_size``), inputs, outputs and parameters, each layer and direction's followed by
    its norms' ``layer_norm_<norm>_l{k}[_reverse]`` for each ``(norm, width in units of
    hidden_size, initial value)`` of ``_norms``. The weights and biases are initialised as
    torch.nn's, uniform(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), the norms' gains to 1 and
    shifts to 0. Zoneout of its states (``_DEFAULTS``: their probabilities, h's first), off by
    default: in training masks drawn per call, in eval the probabilities."""

    _torch_mode = None
    _norms = ()

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__(self._torch_mode, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, device, dtype)

    def _layer_parameters(self, suffix, params):
        weight = params[0][1]
        return params + [(f"layer_norm_{norm}{suffix}",
                          nn.Parameter(weight.new_empty(width * self.hidden_size)))
                         for norm, width, _ in self._norms]

    def reset_parameters(self):
        super().reset_parameters()
        with torch.no_grad():
            for name, param in self.named_parameters(recurse=False):
                for norm, _, value in self._norms:
                    if name.startswith(f"layer_norm_{norm}_l"):
                        param.fill_(value)

    def _call_options(self, input, batch_sizes):
        probabilities = {name: getattr(self, name) for name, _ in self._DEFAULTS}
        if not (self.training and any(p > 0 for p in probabilities.values())):
            return dict(probabilities, extras=None)
        zoneouts = list(probabilities.values())
        return dict(probabilities, extras=[self._zoneout_masks(input, batch_sizes, zoneouts)
                                           for _ in range(self._layer_count())])


class LayerNormLSTM(_LSTMStates, _LayerNormLayer):
    """Layer-normalised LSTM (Ba et al. 2016): ``gates = LN(x W_ih^T; w_ih) + b_ih +
    LN(h_{t-1} W_hh^T; w_hh) + b_hh`` (each norm over all 4 * hidden_size values),
    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(LN(c_t; w_c, b_c))``. torch.nn.LSTM's
    arguments (``input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None``; no ``proj_size``), inputs,
    outputs and parameters, plus per layer ``layer_norm_ih_weight_l{k}``,
    ``layer_norm_hh_weight_l{k}`` ``[4 * hidden_size]``, ``layer_norm_c_weight_l{k}``,
    ``layer_norm_c_bias_l{k}`` ``[hidden_size]``. Runs the ``layernorm_lstm`` cell of
    ``rnnkernels::stacked``.

    Options, keyword-only, off by default (README, "LayerNormLSTM"): ``zoneout`` (h) and
    ``cell_zoneout`` (c) probabilities; h~ = o * tanh(LN(c~)) from the new cell before its
    zoneout."""

    _function = "layernorm_lstm"
    _torch_mode = "LSTM"
    _norms = (("ih_weight", 4, 1.0), ("hh_weight", 4, 1.0), ("c_weight", 1, 1.0),
              ("c_bias", 1, 0.0))
    cell_zoneout = 0.0
    _DEFAULTS = (("zoneout", 0.0), ("cell_zoneout", 0.0))

    def __init__(self, *args, zoneout=0.0, cell_zoneout=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_probabilities(zoneout=zoneout, cell_zoneout=cell_zoneout)


class LayerNormGRU(_LayerNormLayer):
    """Layer-normalised GRU: ``(xr, xz, xn) = LN(x W_ih^T; w_ih) + b_ih``, ``(hr, hz, hn) =
    LN(h_{t-1} W_hh^T; w_hh) + b_hh`` (each norm over all 3 * hidden_size values), then
    torch.nn.GRU's ``r = sigmoid(xr + hr)``, ``z = sigmoid(xz + hz)``, ``n = tanh(xn + r * hn)``,
    ``h_t = (1 - z) * n + z * h_{t-1}``. torch.nn.GRU's arguments (``input_size, hidden_size,
    num_layers=1, bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None,
    dtype=None``), inputs, outputs and parameters, plus per layer ``layer_norm_ih_weight_l{k}``
    and ``layer_norm_hh_weight_l{k}`` ``[3 * hidden_size]``. Runs the ``layernorm_gru`` cell of
    ``rnnkernels::stacked``.

    Option, keyword-only, off by default (README, "LayerNormGRU"): ``zoneout``, the probability
    of h's zoneout."""

    _function = "layernorm_gru"
    _torch_mode = "GRU"
    _norms = (("ih_weight", 3, 1.0), ("hh_weight", 3, 1.0))
    _DEFAULTS = (("zoneout", 0.0),)

    def __init__(self, *args, zoneout=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_probabilities(zoneout=zoneout)


# ---------------------------------------------------------------------------------------------
# Cells: one step of the layer operator (batch_sizes = [B]).

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
    # The operands of the GEMMs: the input and the first state (LSTMCell's c may differ).
    for tensor in (input, states[0]):
        if tensor.dtype != weight_dtype:
            raise _mm_dtype_error(tensor.dtype, weight_dtype)


def _cell_step(cell, input, states, run, carried_state=None):
    """Runs ``run(input, batch_sizes, states, weights, train)`` as a one-step layer, with
    ``weights`` ``(w_ih, w_hh, b_ih, b_hh)``; the input is ``[B, I]`` and states ``[B, H]``.
    Under autocast the step runs in the autocast dtype, and its results come out in torch.nn's
    dtype: that of ``functional.autocast_state_dtype`` for the cells whose update carries
    ``carried_state`` (LSTMCell's c, on which h depends, GRUCell's h), else the autocast dtype."""
    batch_sizes = torch.tensor([input.size(0)], dtype=torch.int64)
    # The kernels take contiguous weights; torch.nn's cells take any (a Parameter set to W.t()).
    weights = tuple(None if w is None else w.contiguous()
                    for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
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
        if _exporting_to_onnx():
            return super().forward(input, hx)
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
        # ATen's lstm_cell takes a sequence of exactly two states.
        if not isinstance(hx, (tuple, list)):
            raise TypeError(f"lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, "
                            f"not {type(hx).__name__}")
        if len(hx) != 2:
            raise RuntimeError("lstm_cell expects two hidden states")
        _check_cell(self, input, hx)
        if input.size(0) == 0:
            link = functional.graph_link([input, *hx, *self.parameters()])
            ret = (hx[0] + link, hx[1] + link)
        elif hx[1].dtype != hx[0].dtype and functional.autocast_dtype(input) is None:
            # c in another dtype than the GEMMs' (torch.nn promotes the cell update to it): the
            # reference runs torch.nn's very operations.
            batch_sizes = torch.tensor([input.size(0)])
            ret = reference.lstm_layer(input, batch_sizes, *hx, self.weight_ih, self.weight_hh,
                                       self.bias_ih, self.bias_hh)[1:]
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
        if _exporting_to_onnx():
            return super().forward(input, hx)
        _check_cell_dims("GRUCell", input, [] if hx is None else [("hidden", hx)])
        return _single_state_cell(
            self, input, hx,
            lambda x, sizes, states, weights, train: ops.gru_layer(
                x, sizes, states[0], *weights, False, train)[1],
            carries_state=True)


class RNNCell(nn.RNNCell):
    """Drop-in ``torch.nn.RNNCell`` running ``rnnkernels::rnn_layer`` for one step."""

    def forward(self, input, hx=None):
        if _exporting_to_onnx():
            return super().forward(input, hx)
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


# Whole-model checkpoints: torch.load(weights_only=True), torch's default, unpickles only
# allowlisted classes. Programs allowlist torch.nn's layers; ours are allowlisted with them once
# the package is imported, so such a checkpoint loads after rnnkernels.convert too.
torch.serialization.add_safe_globals([LSTM, GRU, RNN, IndRNN, LayerNormLSTM, LayerNormGRU, LSTMCell,
                                      GRUCell, RNNCell])
