"""What the benchmark runs: cell kinds, modes and layer shapes."""

from dataclasses import dataclass

KINDS = ("lstm", "gru", "rnn")
MODES = ("inference", "training")

# Gate blocks per cell: every GEMM of a layer is gates * hidden_size wide.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


@dataclass(frozen=True)
class Shape:
    """One layer stack: a [seq_len, batch, input_size] input through `layers` layers."""

    seq_len: int
    batch: int
    input_size: int
    hidden_size: int
    layers: int = 1
    bidirectional: bool = False

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def label(self) -> str:
        text = f"T={self.seq_len} B={self.batch} I={self.input_size} H={self.hidden_size}"
        if self.layers > 1:
            text += f" L={self.layers}"
        if self.bidirectional:
            text += " bi"
        return text


# (seq_len, batch, input_size = hidden_size), each chosen to stress something different.
DEFAULT_GRID = (
    (50, 32, 256),  # a typical small model
    (100, 64, 512),  # mid-size: GEMM-bound
    (20, 1, 128),  # batch 1: latency of short sequences
    (200, 4, 64),  # long sequence, tiny steps: per-step overhead
    (50, 128, 128),  # wide batch, narrow hidden: pointwise work weighs most
    (1, 1, 64),  # a single step: pure call overhead
    (200, 16, 1024),  # large hidden: the recurrent GEMMs dominate
)
