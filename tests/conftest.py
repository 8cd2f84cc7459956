"""Shared fixtures of the test suite.

The module-level tests compare rnnkernels' modules with torch.nn's, built from the same
state_dict and fed the same inputs; the fixtures here build those pairs and compare nested
results (tensors, tuples, PackedSequences) with per-dtype tolerances. They are fixtures rather
than importable helpers so that the tests work under any pytest import mode.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import rnnkernels

# Tolerances of rnnkernels against torch.nn on the same inputs. Both sides compute the same
# math in different summation orders (our GEMMs and fused pointwise loops vs ATen's), so they
# differ by rounding only, which grows with the reduction lengths (I, H, and B*T for the weight
# gradients) and through the recurrence. Measured on the parity cases of test_modules.py, whose
# values (outputs, states, gradients) reach ~20 in magnitude:
# - float64 (eps 2.2e-16): largest difference ~3e-15. 1e-10 leaves a margin of 1e4 for other
#   machines and BLAS builds, and is still ~1e7 below what a wrong formula (a missed term, a
#   swapped gate, a state from the wrong step) produces.
# - float32 (eps 1.2e-7): largest difference ~2.4e-6, on weight gradients of magnitude ~10-20
#   (~10 eps of the value). 2e-5 absolute plus 2e-5 relative allows ~10x that, while a wrong
#   formula is off by >1e-2.
TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=2e-5, atol=2e-5),
}


def _assert_close(actual, expected, path="result"):
    if isinstance(expected, PackedSequence):
        assert isinstance(actual, PackedSequence), f"{path}: expected a PackedSequence"
        for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            want, got = getattr(expected, field), getattr(actual, field)
            if want is None:
                assert got is None, f"{path}.{field}: expected None"
            else:
                assert torch.equal(got, want), f"{path}.{field}: {got} != {want}"
        _assert_close(actual.data, expected.data, f"{path}.data")
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a dict"
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key, want in expected.items():
            _assert_close(actual[key], want, f"{path}[{key!r}]")
    elif isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)), f"{path}: expected a sequence"
        assert len(actual) == len(expected), f"{path}: {len(actual)} items, not {len(expected)}"
        for index, (got, want) in enumerate(zip(actual, expected)):
            _assert_close(got, want, f"{path}[{index}]")
    elif expected is None:
        assert actual is None, f"{path}: expected None"
    else:
        torch.testing.assert_close(actual, expected, **TOLERANCES[expected.dtype],
                                   msg=lambda m: f"{path}: {m}")


@pytest.fixture
def assert_close():
    """``assert_close(actual, expected)``: equal structure (tensors, tuples, lists, dicts,
    PackedSequences, None), shapes and dtypes, values within the tolerance of the expected dtype;
    PackedSequence index fields must match exactly."""
    return _assert_close


def _make_pair(name, *args, seed=0, **kwargs):
    """(torch.nn module, rnnkernels module) of class ``name`` built with the same arguments; ours
    holds a copy of the torch.nn module's state_dict."""
    torch.manual_seed(seed)
    reference = getattr(nn, name)(*args, **kwargs)
    ours = getattr(rnnkernels, name)(*args, **kwargs)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.fixture
def make_pair():
    """``make_pair(name, *args, seed=0, **kwargs) -> (torch.nn module, rnnkernels module)`` with
    identical parameters, e.g. ``make_pair("LSTM", 5, 7, num_layers=2, proj_size=3)``."""
    return _make_pair


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state, so that failures reproduce."""
    torch.manual_seed(0)
