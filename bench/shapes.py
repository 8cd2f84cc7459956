"""What the benchmark runs: cell kinds, modes, layer shapes and the rows of the default grid."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("lstm", "gru", "rnn", "layernorm_lstm")
# torch.nn's kinds, which run the whole default grid. The others, layers torch.nn has no class for
# (timed against a model built from torch.nn pieces, bench/pieces.py), run DEFAULT_PIECES.
TORCH_NN_KINDS = ("lstm", "gru", "rnn")
MODES = ("inference", "training")
AUTOCAST_DTYPES = ("bfloat16", "float16")

# Gate blocks per cell: every GEMM of a layer is gates * hidden_size wide.
GATES = {"lstm": 4, "gru": 3, "rnn": 1, "layernorm_lstm": 4}


@dataclass(frozen=True)
class Shape:
    """One layer stack: a [seq_len, batch, input_size] input through `layers` layers. Packed:
    the batch is a PackedSequence whose lengths spread evenly from seq_len / 10 to seq_len."""

    seq_len: int
    batch: int
    input_size: int
    hidden_size: int
    layers: int = 1
    bidirectional: bool = False
    packed: bool = False

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def lengths(self) -> list[int]:
        """Each sequence's length, longest first (as pack_padded_sequence wants them)."""
        if not self.packed or self.batch == 1:
            return [self.seq_len] * self.batch
        shortest = max(1, round(self.seq_len / 10))
        spread = self.seq_len - shortest
        return [round(self.seq_len - spread * row / (self.batch - 1)) for row in range(self.batch)]

    def batch_sizes(self) -> list[int]:
        """How many sequences each step runs, as PackedSequence.batch_sizes."""
        lengths = self.lengths()
        return [sum(length > step for length in lengths) for step in range(self.seq_len)]

    def label(self) -> str:
        text = f"T={self.seq_len} B={self.batch} I={self.input_size} H={self.hidden_size}"
        if self.layers > 1:
            text += f" L={self.layers}"
        if self.bidirectional:
            text += " bi"
        if self.packed:
            lengths = self.lengths()
            text += f" packed {lengths[-1]}-{lengths[0]}"
        return text


@dataclass(frozen=True)
class Case:
    """One row: a kind and mode on a shape, in the run's dtype or under torch.autocast."""

    kind: str
    mode: str
    shape: Shape
    autocast: str | None = None  # "bfloat16" or "float16": the layer runs under torch.autocast

    def label(self) -> str:
        return self.shape.label() + (f" {self.autocast} autocast" if self.autocast else "")


# (seq_len, batch, input_size = hidden_size), each chosen to stress something different.
DEFAULT_GRID = (
    (50, 32, 256),  # a typical small model
    (100, 64, 512),  # mid-size: GEMM-bound
    (20, 1, 128),  # batch 1: latency of short sequences
    (200, 4, 64),  # long sequence, tiny steps: per-step overhead
    (50, 128, 128),  # wide batch, narrow hidden: pointwise work weighs most
    (1, 1, 64),  # a single step: pure call overhead (timed in microseconds)
    (200, 16, 1024),  # large hidden: the recurrent GEMMs dominate
)
# Rows beside the grid: a variable-length batch as a PackedSequence (about half the padded
# tokens), and bfloat16 under autocast on a small shape and the single step. Larger autocast
# shapes take minutes per row on CPUs without bfloat16 instructions: `--autocast bfloat16` runs
# the whole grid.
DEFAULT_PACKED = ((100, 32, 256),)
DEFAULT_AUTOCAST = ("bfloat16", ((50, 32, 256), (1, 1, 64)))
# The rows of the kinds outside torch.nn: a small and a mid-size model (their baselines step in
# Python, so the single step and the long sequences would time Python alone).
DEFAULT_PIECES = ((50, 32, 256), (100, 64, 512))
