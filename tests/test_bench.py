"""Tests of the benchmark: the CLI on one tiny shape (every kind and mode, packed and autocast
rows, a tiny time budget), the oneDNN RNN binding against torch.nn, and the columns when the
binding is absent."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rnnkernels

from bench import measure as bench_measure
from bench import native, report
from bench.flops import layer_gemms
from bench.onednn_rnn import OneDnnRnn
from bench.pieces import LayerNormLSTMFromPieces
from bench.peak import measure_peaks
from bench.run import cases_from, parse_args
from bench.shapes import Shape

REPO = Path(__file__).resolve().parents[1]
T, B, I, H = 3, 2, 5, 8
SHAPE = ["--seq-len", str(T), "--batch", str(B), "--input-size", str(I), "--hidden-size", str(H)]
TINY_BUDGET = ["--rounds", "2", "--min-run-time", "0.001", "--threads", "1"]
GATES = {"lstm": 4, "gru": 3, "rnn": 1, "layernorm_lstm": 4}
# The kinds timed against a model of torch.nn pieces, which oneDNN's RNN has no cell for.
PIECES_KINDS = {"layernorm_lstm"}
TORCH_NN_KINDS = ["--kind", "lstm", "gru", "rnn"]
HAS_ONEDNN_RNN = native.load().has_onednn_rnn
LIBRARIES = ("torch.nn", "rnnkernels") + (("oneDNN", "oneDNN GEMMs") if HAS_ONEDNN_RNN else ())


def run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def run_report(out: Path, *options: str) -> dict:
    # README's form of the command: a script path, which must still import `bench` as a package.
    run("bench/run.py", *SHAPE, *TINY_BUDGET, "--out", str(out), *options)
    return json.loads((out / "cpu.json").read_text())


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    run_report(out)
    return out


@pytest.fixture(scope="module")
def report_json(out_dir) -> dict:
    return json.loads((out_dir / "cpu.json").read_text())


@pytest.fixture(scope="module")
def packed_report(tmp_path_factory) -> dict:
    return run_report(tmp_path_factory.mktemp("packed"), "--packed", "--mode", "training",
                      *TORCH_NN_KINDS)


@pytest.fixture(scope="module")
def autocast_report(tmp_path_factory) -> dict:
    return run_report(tmp_path_factory.mktemp("autocast"), "--autocast", "bfloat16",
                      *TORCH_NN_KINDS)


def test_every_kind_and_mode_is_reported(report_json):
    measured = {(result["kind"], result["mode"]) for result in report_json["results"]}
    assert measured == {(kind, mode) for kind in GATES for mode in ("inference", "training")}
    for result in report_json["results"]:
        assert result["autocast"] is None
        assert result["shape"] == {
            "seq_len": T,
            "batch": B,
            "input_size": I,
            "hidden_size": H,
            "layers": 1,
            "bidirectional": False,
            "packed": False,
        }


def test_onednn_column_is_there_exactly_when_its_binding_built(report_json):
    metadata = report_json["metadata"]
    assert tuple(metadata["libraries"]) == LIBRARIES
    if HAS_ONEDNN_RNN:
        assert re.fullmatch(r"oneDNN 3\.\d+\.\d+ from .+", metadata["onednn_rnn"])
    else:
        assert metadata["onednn_rnn"].startswith("not measured: ")
        assert all("oneDNN" not in result["median_seconds"] for result in report_json["results"])


def timed_libraries(result) -> tuple:
    """The libraries that ran the row: all but oneDNN's RNN for a kind it has no cell for."""
    if result["kind"] in PIECES_KINDS:
        return tuple(library for library in LIBRARIES if library != "oneDNN")
    return LIBRARIES


def test_times_speedups_and_rates_agree(report_json):
    peak = report_json["metadata"]["peak"]["float32"]
    for result in report_json["results"]:
        seconds = result["median_seconds"]
        assert set(seconds) == set(LIBRARIES)
        untimed = set(LIBRARIES) - set(timed_libraries(result))
        assert result["not_available"] == dict.fromkeys(untimed, "cell not in oneDNN")
        for library in untimed:
            assert seconds[library] is None and result["speedup"][library] is None
        for library in timed_libraries(result):
            assert seconds[library] > 0
            gflops = result["gemm_flops"] / seconds[library] / 1e9
            assert result["gflops"][library] == pytest.approx(gflops)
            if peak:
                assert result["peak_fraction"][library] == pytest.approx(gflops / peak["gflops"])
        assert set(result["speedup"]) == set(LIBRARIES) - {"rnnkernels"}
        for baseline in set(timed_libraries(result)) - {"rnnkernels"}:
            speedup = result["speedup"][baseline]
            assert speedup == pytest.approx(seconds[baseline] / seconds["rnnkernels"])


def test_only_training_saves_tensors(report_json):
    for result in report_json["results"]:
        for library in ("torch.nn", "rnnkernels"):
            assert (result["saved_bytes"][library] > 0) == (result["mode"] == "training"), (
                result["kind"],
                result["mode"],
                library,
            )


@pytest.mark.parametrize("kind", GATES)
def test_gemm_flops_are_those_of_the_layer(report_json, kind):
    """Forward: input projection and recurrent products; backward does each twice over (the
    gradients of the operand and of the weight)."""
    forward = 2 * T * B * (I + H) * GATES[kind] * H
    flops = {
        result["mode"]: result["gemm_flops"]
        for result in report_json["results"]
        if result["kind"] == kind
    }
    assert flops == {"inference": forward, "training": 3 * forward}


def test_outputs_match_torch_nn(report_json):
    for result in report_json["results"]:
        compared = set(LIBRARIES) - {"torch.nn", "oneDNN GEMMs"}  # the GEMMs have no outputs
        assert set(result["max_abs_diff"]) == compared
        for library in compared & set(timed_libraries(result)):
            difference = result["max_abs_diff"][library]
            assert difference < 1e-5, (result["kind"], result["mode"], library)


def test_peak_is_measured_with_the_widest_vectors_here(report_json):
    peaks = report_json["metadata"]["peak"]
    flags = set(re.findall(r"\w+", Path("/proc/cpuinfo").read_text()))
    widest = "avx512f" if "avx512f" in flags else "avx2" if {"avx2", "fma"} <= flags else None
    if widest is None or not native.load().module:
        assert peaks["float32"] is None
    else:
        assert peaks["float32"]["isa"] == widest
        assert peaks["float32"]["threads"] == 1
        assert peaks["float32"]["gflops"] > 0
    if not native.load().module:
        assert peaks["bfloat16"] is None
    elif "amx_bf16" in flags:
        assert peaks["bfloat16"]["isa"] == "amx_bf16"
    elif "avx512_bf16" in flags:
        assert peaks["bfloat16"]["isa"] == "avx512_bf16"
    else:
        assert peaks["bfloat16"] is None


def test_packed_rows_run_the_modules_and_leave_onednn_out(packed_report):
    lengths = [3, 1]  # spread evenly from seq_len / 10 (at least 1) to seq_len
    for result in packed_report["results"]:
        assert result["shape"]["packed"]
        for library in ("torch.nn", "rnnkernels"):
            assert result["median_seconds"][library] > 0
        assert result["max_abs_diff"]["rnnkernels"] < 1e-5
        # The backward's GEMMs are twice the forward's, as for padded input.
        forward = 2 * sum(lengths) * (I + H) * GATES[result["kind"]] * H
        assert result["gemm_flops"] == 3 * forward
        if HAS_ONEDNN_RNN:
            assert result["median_seconds"]["oneDNN"] is None
            assert result["not_available"] == {"oneDNN": "packed input"}


def test_autocast_rows_record_what_fails_and_time_the_rest(autocast_report):
    """torch.nn's CPU LSTM raises under bfloat16 autocast where oneDNN lacks bfloat16 (CPUs
    without AVX-512): the row says so and the run goes on."""
    results = autocast_report["results"]
    assert len(results) == 6
    for result in results:
        assert result["autocast"] == "bfloat16"
        for library in ("torch.nn", "rnnkernels"):
            reason = result["not_available"].get(library)
            assert (result["median_seconds"][library] is None) == (reason is not None)
            assert reason is None or reason.startswith("error: ")
        assert result["median_seconds"]["rnnkernels"] > 0
        if HAS_ONEDNN_RNN:
            assert result["not_available"]["oneDNN"] == "float32 CPU only"
            assert result["not_available"]["oneDNN GEMMs"] == "float32 only"


def test_autocast_rows_time_our_float32_beside(autocast_report):
    """The speedup autocast buys over our own float32 layer, timed in the same rounds."""
    assert autocast_report["metadata"]["libraries"][-1] == "rnnkernels float32"
    for result in autocast_report["results"]:
        seconds = result["median_seconds"]
        assert seconds["rnnkernels float32"] > 0
        assert result["speedup"]["rnnkernels float32"] == pytest.approx(
            seconds["rnnkernels float32"] / seconds["rnnkernels"])
        assert "rnnkernels float32" not in result["max_abs_diff"]
    table = report.terminal_table(autocast_report["metadata"], autocast_report["results"])
    assert "vs rnnkernels float32" in table and "diff rnnkernels float32" not in table


def test_autocast_rows_rate_against_the_peak_of_their_dtype(autocast_report):
    peak = autocast_report["metadata"]["peak"]["bfloat16"]
    for result in autocast_report["results"]:
        for library, gflops in result["gflops"].items():
            fraction = result["peak_fraction"][library]
            if gflops is None or peak is None:
                assert fraction is None
            else:
                assert fraction == pytest.approx(gflops / peak["gflops"])


def test_rows_without_autocast_leave_our_float32_out(report_json):
    assert "rnnkernels float32" not in report_json["metadata"]["libraries"]


def test_failures_show_as_n_a_with_their_errors_listed(autocast_report):
    metadata, results = autocast_report["metadata"], autocast_report["results"]
    table = report.terminal_table(metadata, results)
    for result in results:
        if "torch.nn" in result["not_available"]:
            assert "n/a (error)" in table
            assert result["not_available"]["torch.nn"] in table


def test_default_rows_hold_the_grid_a_packed_batch_autocast_and_the_single_step():
    cases = cases_from(parse_args(["--kind", "lstm", "--mode", "inference"]))
    labels = [case.label() for case in cases]
    assert "T=1 B=1 I=64 H=64" in labels
    assert "T=100 B=32 I=256 H=256 packed 10-100" in labels
    assert any(case.autocast == "bfloat16" for case in cases)
    # Kinds outside torch.nn run their own default rows, against models of torch.nn pieces.
    cases = cases_from(parse_args(["--kind", "layernorm_lstm", "--mode", "inference"]))
    assert [case.label() for case in cases] == ["T=50 B=32 I=256 H=256", "T=100 B=64 I=512 H=512"]
    # Options replace the default rows by their product.
    options = parse_args([*SHAPE, "--packed", "--autocast", "bfloat16"])
    (case,) = {(case.shape, case.autocast) for case in cases_from(options)}
    assert case[0].packed and case[1] == "bfloat16"


@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bias": False}])
def test_layernorm_lstm_from_torch_nn_pieces_is_rnnkernels_layer(options):
    """The baseline of the layernorm_lstm rows computes rnnkernels.LayerNormLSTM's layer, outputs
    and gradients (float64, norms' parameters away from their initial values)."""
    torch.manual_seed(0)
    ours = rnnkernels.LayerNormLSTM(I, H, dtype=torch.float64, **options)
    with torch.no_grad():
        for parameter in ours.parameters():
            parameter.add_(torch.randn_like(parameter) / 4)
    pieces = LayerNormLSTMFromPieces(ours)
    inputs = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    results = {}
    for name, module in (("ours", ours), ("pieces", pieces)):
        outputs = bench_measure.flat_outputs(module(inputs))
        grads = torch.autograd.grad(outputs, [inputs, *module.parameters()],
                                    [torch.ones_like(output) for output in outputs])
        results[name] = outputs, grads
    for got, expected in zip(results["pieces"][0], results["ours"][0]):
        torch.testing.assert_close(got, expected)
    # Input, then each layer's W_ih, W_hh (and with bias the norms' shifts b_ih, b_hh), the norms.
    got = dict(zip(["input", *[n for n, _ in pieces.named_parameters()]], results["pieces"][1]))
    expected = dict(zip(["input", *[n for n, _ in ours.named_parameters()]], results["ours"][1]))
    torch.testing.assert_close(got.pop("input"), expected.pop("input"))
    renames = {"ih.weight": "weight_ih", "hh.weight": "weight_hh", "norm_ih.bias": "bias_ih",
               "norm_hh.bias": "bias_hh", "norm_ih.weight": "layer_norm_ih_weight",
               "norm_hh.weight": "layer_norm_hh_weight", "norm_c.weight": "layer_norm_c_weight",
               "norm_c.bias": "layer_norm_c_bias"}
    assert len(got) == len(expected)
    for name, grad in got.items():
        layer, piece = name.removeprefix("layers.").split(".", 1)
        torch.testing.assert_close(grad, expected[f"{renames[piece]}_l{layer}"])


def test_short_times_are_in_microseconds():
    assert report.duration(23.4e-6) == "23.4 us"
    assert report.duration(0.141) == "141 ms"


@pytest.mark.skipif(not HAS_ONEDNN_RNN, reason="the oneDNN RNN binding did not build here")
@pytest.mark.parametrize(
    "module_type, options",
    [
        (torch.nn.LSTM, {}),
        (torch.nn.GRU, {}),
        (torch.nn.RNN, {}),
        (torch.nn.RNN, {"nonlinearity": "relu"}),
        (torch.nn.LSTM, {"num_layers": 2, "bidirectional": True}),
        (torch.nn.GRU, {"num_layers": 3, "bias": False}),
    ],
    ids=["lstm", "gru", "rnn_tanh", "rnn_relu", "lstm-2-layers-bidirectional", "gru-3-no-bias"],
)
def test_onednn_rnn_matches_torch_nn_in_outputs_and_gradients(module_type, options):
    """Gate orders, LBR GRU's bias and the gradients' layouts, on awkward (prime) sizes."""
    torch.manual_seed(0)
    module = module_type(7, 11, **options)
    inputs = torch.randn(5, 3, 7, requires_grad=True)
    outputs = bench_measure.flat_outputs(module(inputs))
    grad_outputs = [torch.randn_like(output) for output in outputs]
    torch.autograd.backward(outputs, grad_outputs)

    for training in (False, True):
        onednn = OneDnnRnn(module, inputs, grad_outputs if training else None)
        onednn.step()
        for got, expected in zip(onednn.outputs, outputs):
            torch.testing.assert_close(got, expected.detach(), rtol=2e-5, atol=2e-5)
    onednn.step()  # a second backward overwrites the gradients, as autograd's fresh ones
    torch.testing.assert_close(onednn.input_gradient, inputs.grad, rtol=2e-5, atol=2e-5)
    gradients = onednn.parameter_gradients()
    assert set(gradients) == {name for name, _ in module.named_parameters()}
    for name, parameter in module.named_parameters():
        torch.testing.assert_close(gradients[name], parameter.grad, rtol=2e-5, atol=2e-5)


@pytest.mark.skipif(not HAS_ONEDNN_RNN, reason="the oneDNN binding did not build here")
@pytest.mark.parametrize("packed", [False, True])
def test_gemms_alone_split_only_the_per_step_products(packed):
    """The floor of GEMMs splits by rows only what a recurrence's slices split: the per-step
    products, never the once-per-layer ones nor the weight gradients."""
    shape = Shape(seq_len=6, batch=8, input_size=16, hidden_size=32, packed=packed)
    gemms = layer_gemms("lstm", shape, training=True)
    floor = bench_measure.gemms_alone("lstm", shape, training=True)
    floor.step()
    sliced = floor.sliced()
    assert len(sliced) == len(gemms)
    for gemm, split in zip(gemms, sliced):
        if gemm.count == 1 or gemm.transposed_a:
            assert not split


def test_without_the_binding_its_columns_are_absent(monkeypatch):
    missing = native.Native(None, None, "bench/native.cpp did not build: no compiler")
    monkeypatch.setattr(native, "load", lambda: missing)
    assert bench_measure.libraries_for(torch.device("cpu"), []) == ("torch.nn", "rnnkernels")
    assert measure_peaks(torch.device("cpu"), 1, 0.01) == {"float32": None, "bfloat16": None}
    assert not any("oneDNN" in column for column in report.columns(["torch.nn", "rnnkernels"]))


def test_markdown_and_plot_are_written(out_dir):
    markdown = (out_dir / "cpu.md").read_text()
    assert markdown.count("\n| lstm |") == 2
    assert "- peak: float32 " in markdown
    if importlib.util.find_spec("matplotlib"):
        assert (out_dir / "cpu.png").read_bytes().startswith(b"\x89PNG")


def test_module_entry_point():
    assert "--autocast" in run("-m", "bench", "--help").stdout
