"""Smoke test of the benchmark CLI: one tiny shape, every kind and mode, a tiny time budget."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
T, B, I, H = 3, 2, 5, 8
LIBRARIES = ("torch.nn", "rnnkernels")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    shape = [
        "--seq-len",
        str(T),
        "--batch",
        str(B),
        "--input-size",
        str(I),
        "--hidden-size",
        str(H),
    ]
    # README's form of the command: a script path, which must still import `bench` as a package.
    run(
        "bench/run.py",
        *shape,
        "--rounds",
        "2",
        "--min-run-time",
        "0.001",
        "--threads",
        "1",
        "--out",
        str(out),
    )
    return out


@pytest.fixture(scope="module")
def report(out_dir) -> dict:
    return json.loads((out_dir / "cpu.json").read_text())


def test_every_kind_and_mode_is_reported(report):
    measured = {(result["kind"], result["mode"]) for result in report["results"]}
    assert measured == {(kind, mode) for kind in GATES for mode in ("inference", "training")}
    for result in report["results"]:
        assert result["shape"] == {
            "seq_len": T,
            "batch": B,
            "input_size": I,
            "hidden_size": H,
            "layers": 1,
            "bidirectional": False,
        }


def test_times_ratios_and_efficiencies_are_positive(report):
    for result in report["results"]:
        for library in LIBRARIES:
            assert result["median_seconds"][library] > 0
            assert result["efficiency"][library] == pytest.approx(
                result["gemm_bound_seconds"] / result["median_seconds"][library]
            )
        assert result["ratio"] == pytest.approx(
            result["median_seconds"]["torch.nn"] / result["median_seconds"]["rnnkernels"]
        )
        assert result["gemm_bound_seconds"] > 0


def test_only_training_saves_tensors(report):
    for result in report["results"]:
        for library in LIBRARIES:
            assert (result["saved_bytes"][library] > 0) == (result["mode"] == "training"), (
                result["kind"],
                result["mode"],
                library,
            )


@pytest.mark.parametrize("kind", GATES)
def test_gemm_flops_are_those_of_the_layer(report, kind):
    """Forward: input projection and recurrent products; backward does each twice over (the
    gradients of the operand and of the weight)."""
    forward = 2 * T * B * (I + H) * GATES[kind] * H
    flops = {
        result["mode"]: result["gemm_flops"]
        for result in report["results"]
        if result["kind"] == kind
    }
    assert flops == {"inference": forward, "training": 3 * forward}


def test_outputs_match_torch_nn(report):
    for result in report["results"]:
        assert result["max_abs_diff"] < 1e-5, (result["kind"], result["mode"])


def test_metadata_says_where_and_how_it_ran(report):
    metadata = report["metadata"]
    assert metadata["device"] == "cpu"
    assert metadata["device_name"]
    assert metadata["threads"] == 1
    assert metadata["dtype"] == "float32"
    assert {"torch", "date", "command", "rounds", "min_run_time"} <= metadata.keys()


def test_markdown_and_plot_are_written(out_dir):
    markdown = (out_dir / "cpu.md").read_text()
    assert markdown.count("\n| lstm |") == 2
    if importlib.util.find_spec("matplotlib"):
        assert (out_dir / "cpu.png").read_bytes().startswith(b"\x89PNG")


def test_module_entry_point():
    assert "--min-run-time" in run("-m", "bench", "--help").stdout
