"""rnnkernels: fused LSTM, GRU, Elman-RNN and IndRNN kernels (CPU and CUDA) as PyTorch operators,
behind drop-in replacements of torch.nn.LSTM/GRU/RNN and their cells, and an IndRNN layer."""

from . import _ops, functional, reference
from .convert import convert
from .modules import GRU, LSTM, RNN, GRUCell, IndRNN, LSTMCell, RNNCell

__all__ = [
    "LSTM",
    "GRU",
    "RNN",
    "IndRNN",
    "LSTMCell",
    "GRUCell",
    "RNNCell",
    "convert",
    "functional",
    "reference",
]
__version__ = "0.1.0"
