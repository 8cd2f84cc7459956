"""Layers torch.nn has no class for, built as their users build them today from torch.nn pieces:
the baseline of their benchmark rows (in the "torch.nn" column)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence


class LayerNormLSTMFromPieces(nn.Module):
    """rnnkernels.LayerNormLSTM's equations from nn.Linear, nn.LayerNorm and a Python loop over
    the steps, with a copy of `ours`'s parameters: per layer, the input projection and its norm
    once over all steps (the norm's shift is b_ih), then per step the recurrent projection and its
    norm (shift b_hh), the LSTM update and the norm of c_t. Sequence-first, one direction, no
    dropout, zero initial states, as the benchmark's rows run it."""

    def __init__(self, ours):
        super().__init__()
        if ours.bidirectional or ours.batch_first or ours.dropout:
            raise NotImplementedError(
                "the torch.nn-pieces LayerNormLSTM is sequence-first, one direction, no dropout"
            )
        factory = {"device": ours.weight_ih_l0.device, "dtype": ours.weight_ih_l0.dtype}
        hidden = ours.hidden_size
        self.hidden_size = hidden
        self.layers = nn.ModuleList()
        for k in range(ours.num_layers):
            layer = nn.Module()
            layer.ih = nn.Linear(ours.weight_ih_l0.shape[1] if k == 0 else hidden, 4 * hidden,
                                 bias=False, **factory)
            layer.hh = nn.Linear(hidden, 4 * hidden, bias=False, **factory)
            layer.norm_ih = nn.LayerNorm(4 * hidden, bias=ours.bias, **factory)
            layer.norm_hh = nn.LayerNorm(4 * hidden, bias=ours.bias, **factory)
            layer.norm_c = nn.LayerNorm(hidden, **factory)
            sources = {
                layer.ih.weight: f"weight_ih_l{k}",
                layer.hh.weight: f"weight_hh_l{k}",
                layer.norm_ih.weight: f"layer_norm_ih_weight_l{k}",
                layer.norm_hh.weight: f"layer_norm_hh_weight_l{k}",
                layer.norm_c.weight: f"layer_norm_c_weight_l{k}",
                layer.norm_c.bias: f"layer_norm_c_bias_l{k}",
            }
            if ours.bias:
                sources[layer.norm_ih.bias] = f"bias_ih_l{k}"
                sources[layer.norm_hh.bias] = f"bias_hh_l{k}"
            with torch.no_grad():
                for parameter, name in sources.items():
                    parameter.copy_(getattr(ours, name))
            self.layers.append(layer)

    def forward(self, x, hx=None):
        if isinstance(x, PackedSequence) or hx is not None:
            raise NotImplementedError("the torch.nn-pieces LayerNormLSTM takes a padded input only")
        h_n, c_n = [], []
        for layer in self.layers:
            h = c = x.new_zeros(x.shape[1], self.hidden_size)
            input_gates = layer.norm_ih(layer.ih(x))
            outputs = []
            for t in range(x.shape[0]):
                i, f, g, o = (input_gates[t] + layer.norm_hh(layer.hh(h))).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(layer.norm_c(c))
                outputs.append(h)
            x = torch.stack(outputs)
            h_n.append(h)
            c_n.append(c)
        return x, (torch.stack(h_n), torch.stack(c_n))


# rnnkernels' class of each kind torch.nn has none for -> its model from torch.nn pieces.
PIECES = {"layernorm_lstm": LayerNormLSTMFromPieces}
