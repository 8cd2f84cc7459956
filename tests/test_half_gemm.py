"""The CPU GEMMs of bfloat16 and float16 (csrc/cpu/native_dot.h): ATen's where the CPU has
dot-product instructions for the type, else float32's on the widened operands. Either way they
must compute what a half-type GEMM with float32 accumulation does. RNNKERNELS_HALF_GEMM forces
one or the other, so both run here whatever this CPU has."""

import os
import subprocess
import sys

import pytest
import torch

# Forward and backward of every kind, 2 layers, bidirectional, in each half type and, on the same
# (rounded) weights and input, in float64: the outputs and every gradient, saved to argv[1]. Padded
# and packed (steps of 3, 2 and 1 rows: a GEMM per row count).
_SCRIPT = """
import sys
import torch
import rnnkernels
from torch.nn.utils.rnn import pack_padded_sequence

torch.manual_seed(0)
results = {}
for name in ("LSTM", "GRU", "RNN"):
    for dtype in (torch.bfloat16, torch.float16):
        module = getattr(rnnkernels, name)(8, 16, num_layers=2, bidirectional=True).to(dtype)
        x = torch.randn(6, 3, 8).to(dtype)
        grad = torch.randn(6, 3, 32).to(dtype)
        for packed in (False, True):
            runs = []
            for run_dtype in (dtype, torch.float64):
                m = module.to(run_dtype)
                xi = x.to(run_dtype).detach().requires_grad_()
                if packed:
                    out = m(pack_padded_sequence(xi, [6, 4, 2]))[0].data
                    out_grad = pack_padded_sequence(grad, [6, 4, 2]).data
                else:
                    out, out_grad = m(xi)[0], grad
                out.backward(out_grad.to(run_dtype))
                runs.append([out.detach(), xi.grad] + [p.grad.clone() for p in m.parameters()])
                m.zero_grad()
            results[name, str(dtype), packed] = runs
torch.save(results, sys.argv[1])
"""

# Largest error against float64, relative to the largest value of each result: a few roundings of
# the type (bfloat16 8 bits, float16 11) through two layers of six steps.
_BOUNDS = {"torch.bfloat16": 2.0**-5, "torch.float16": 2.0**-8}


def _run(tmp_path, mode):
    path = tmp_path / f"{mode}.pt"
    env = dict(os.environ, RNNKERNELS_HALF_GEMM=mode)
    subprocess.run([sys.executable, "-c", _SCRIPT, str(path)], check=True, env=env)
    return torch.load(path)


def _relative_error(actual, exact):
    return ((actual.double() - exact).abs().max() / exact.abs().max().clamp_min(1e-30)).item()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("half_gemm")
    return {mode: _run(tmp_path, mode) for mode in ("native", "widened")}


@pytest.mark.parametrize("mode", ["native", "widened"])
def test_half_gemms_match_float64(runs, mode):
    for (name, dtype, _), (half, exact) in runs[mode].items():
        for index, (actual, expected) in enumerate(zip(half, exact)):
            assert actual.dtype == getattr(torch, dtype.split(".")[1])
            error = _relative_error(actual, expected)
            assert error < _BOUNDS[dtype], f"{mode} {name} {dtype} result {index}: {error:.2e}"


def test_both_ways_agree(runs):
    """The same sums in float32, rounded once: the two ways differ by summation order only."""
    for key, (native, _) in runs["native"].items():
        widened = runs["widened"][key][0]
        for index, (a, b) in enumerate(zip(native, widened)):
            error = _relative_error(a, b.double())
            assert error < _BOUNDS[key[1]] / 2, f"{key} result {index}: {error:.2e}"


def test_a_bad_choice_fails_at_import():
    env = dict(os.environ, RNNKERNELS_HALF_GEMM="fast")
    result = subprocess.run([sys.executable, "-c", "import rnnkernels"], capture_output=True,
                            text=True, env=env)
    assert result.returncode != 0
    assert "RNNKERNELS_HALF_GEMM: expected 'native' or 'widened', got 'fast'" in result.stderr
