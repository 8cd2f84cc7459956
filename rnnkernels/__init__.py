"""rnnkernels: fused LSTM, GRU and Elman-RNN kernels (CPU and CUDA) as PyTorch operators, behind
drop-in replacements of torch.nn.LSTM/GRU/RNN and their cells."""

from . import _ops, functional, reference
from .convert import convert
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = [
    "LSTM",
    "GRU",
    "RNN",
    "LSTMCell",
    "GRUCell",
    "RNNCell",
    "convert",
    "functional",
    "reference",
]
__version__ = "0.1.0"
