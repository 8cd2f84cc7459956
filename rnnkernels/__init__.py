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
    "empty_cache",
    "functional",
    "reference",
]
__version__ = "0.1.0"


def empty_cache() -> None:
    """Returns to the system the CPU buffers that the layers keep for reuse: buffers of 1 MiB and
    more that earlier calls freed, at most RNNKERNELS_CPU_BUFFER_CACHE_BYTES of them (1 GiB
    unless set; 0 keeps none). Buffers in use stay, and go back to the pool when freed."""
    _ops._C._release_pooled_buffers()
