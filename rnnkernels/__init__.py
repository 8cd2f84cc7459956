"""rnnkernels: fused LSTM, GRU, Elman-RNN, IndRNN and layer-normalised LSTM and GRU kernels (CPU and
CUDA) as PyTorch operators, behind drop-in replacements of torch.nn.LSTM/GRU/RNN and their cells,
an IndRNN layer and layer-normalised LSTM and GRU layers."""

from . import _ops, functional, reference
from .convert import convert
from .modules import (GRU, LSTM, RNN, GRUCell, IndRNN, LayerNormGRU, LayerNormLSTM, LSTMCell,
                      RNNCell)

__all__ = [
    "LSTM",
    "GRU",
    "RNN",
    "IndRNN",
    "LayerNormLSTM",
    "LayerNormGRU",
    "LSTMCell",
    "GRUCell",
    "RNNCell",
    "convert",
    "functional",
    "reference",
]
__version__ = "0.1.0"
