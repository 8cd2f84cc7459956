"""Writes the results: a terminal table, <device>.json, <device>.md and <device>.png."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from bench.measure import COMPARED, MODULE_LIBRARIES
from bench.shapes import KINDS, MODES, Case, Shape

TEXT_COLUMNS = 3  # kind, mode, case; the rest are numbers, aligned right
KIND_COLORS = {"lstm": "#4c72b0", "gru": "#dd8452", "rnn": "#55a868", "layernorm_lstm": "#8172b3"}

EXPLANATION = """\
- torch.nn: for layernorm_lstm, which torch.nn has no class for, the same layer as users build
  it from torch.nn pieces (nn.Linear, nn.LayerNorm, a Python loop over the steps:
  bench/pieces.py), with rnnkernels.LayerNormLSTM's weights.
- times: median per call, in ms (us below 1 ms). n/a: the library cannot run the case; the
  reason in brackets, errors in full under the table.
- vs torch.nn, vs oneDNN: rnnkernels' speedup, the other's median time / rnnkernels' (above 1:
  rnnkernels is faster; "time ratio rnnkernels / oneDNN at most 1.0" is "vs oneDNN >= 1.00x").
- oneDNN: oneDNN's RNN primitive (lstm, lbr_gru, which is torch's GRU, vanilla_rnn) called from
  C++ (bench/native.cpp) with torch.nn's weights, reordered into its own layout once before
  the timing; training is forward_training + backward (weight, bias and input gradients). It
  takes no packed input and runs float32 only.
- oneDNN GEMMs: the row's GEMMs alone (bench/flops.py's list), no pointwise work, each
  through oneDNN's matmul primitive with its weight reordered once before the timing into the
  layout the primitive picks; per-step products run whole or split by rows across the threads,
  whichever ran faster when the row was set up (bench/native.cpp). What a layer built on
  oneDNN's GEMMs needs at least where those GEMMs dominate; at small shapes a primitive's
  per-call cost dominates it instead. "vs oneDNN GEMMs" is the fraction of that floor
  rnnkernels reaches. float32 only.
- rnnkernels float32 (where the run has autocast rows): our layer on an autocast row's work
  without autocast, in the module's float32; "vs rnnkernels float32" is then what autocast
  gains over it (above 1: the autocast dtype is faster).
- GFLOP/s: the layer's GEMM flops (bench/flops.py: the input projection and per-step recurrent
  products and, when training, the backward's) / median time; in brackets, percent of the
  peak of the row's dtype (float32, or bfloat16 on autocast rows: FMA, AMX or dot-product loops
  on the run's threads, the higher of a measurement at the start and one at the end of the
  run).
- saved: unique storages autograd saved for backward during the forward (input and
  weights included), from `torch.autograd.graph.saved_tensors_hooks`.
- diff: largest difference of the outputs from torch.nn's, same weights and precision.
"""


def columns(libraries: list[str]) -> list[str]:
    return [
        "kind",
        "mode",
        "case",
        *libraries,
        *(f"vs {baseline}" for baseline in libraries if baseline != "rnnkernels"),
        *(f"GFLOP/s {library}" for library in libraries),
        *(f"saved {library}" for library in MODULE_LIBRARIES),
        *(f"diff {library}" for library in libraries if library in COMPARED),
    ]


def duration(seconds: float) -> str:
    value, unit = (seconds * 1e3, "ms") if seconds >= 1e-3 else (seconds * 1e6, "us")
    decimals = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{decimals}f} {unit}"


def byte_size(count: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def case_of(result: dict) -> Case:
    return Case(result["kind"], result["mode"], Shape(**result["shape"]), result["autocast"])


def unavailable(result: dict, library: str) -> str:
    """n/a with the reason's head: "error", "no packed input", ..."""
    reason = result["not_available"].get(library, "not measured")
    return f"n/a ({reason.split(':')[0]})"


def table_row(result: dict, libraries: list[str]) -> list[str]:
    def rate(library: str) -> str:
        gflops, fraction = result["gflops"][library], result["peak_fraction"][library]
        if gflops is None:
            return "n/a"
        return f"{gflops:.3g}" + (f" ({fraction:.0%})" if fraction is not None else "")

    def optional(value, show) -> str:
        return "n/a" if value is None else show(value)

    times = result["median_seconds"]

    speedups = result["speedup"]
    return [
        result["kind"],
        result["mode"],
        case_of(result).label(),
        *(
            unavailable(result, library) if times[library] is None else duration(times[library])
            for library in libraries
        ),
        *(
            optional(speedups[baseline], lambda speedup: f"{speedup:.2f}x")
            for baseline in libraries
            if baseline != "rnnkernels"
        ),
        *(rate(library) for library in libraries),
        *(optional(result["saved_bytes"][library], byte_size) for library in MODULE_LIBRARIES),
        *(
            optional(result["max_abs_diff"][library], lambda diff: f"{diff:.1e}")
            for library in libraries
            if library in COMPARED
        ),
    ]


def rows(metadata: dict, results: list) -> list[list[str]]:
    """The header, then one row per result."""
    header = columns(metadata["libraries"])
    return [header] + [table_row(result, metadata["libraries"]) for result in results]


def error_notes(results: list) -> list[str]:
    """One line per library error, in full (the table shows only "n/a (error)")."""
    return [
        f"- {result['kind']} {result['mode']} {case_of(result).label()}, {library}: {reason}"
        for result in results
        for library, reason in result["not_available"].items()
        if reason.startswith("error")
    ]


def describe_peaks(peaks: dict) -> str:
    return "; ".join(
        f"{dtype} {peak['gflops']:.0f} GFLOP/s ({peak['isa']}, threads: {peak['threads']})"
        if peak
        else f"{dtype}: none here"
        for dtype, peak in peaks.items()
    )


def summary(metadata: dict) -> list[str]:
    """What the table's percentages and oneDNN columns rest on."""
    return [f"peak: {describe_peaks(metadata['peak'])}", f"onednn_rnn: {metadata['onednn_rnn']}"]


def terminal_table(metadata: dict, results: list) -> str:
    table = rows(metadata, results)
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]

    def line(row):
        cells = (
            cell.ljust(width) if column < TEXT_COLUMNS else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths))
        )
        return "  ".join(cells)

    lines = [line(table[0]), "  ".join("-" * width for width in widths)]
    lines += [line(row) for row in table[1:]]
    return "\n".join(lines + [""] + summary(metadata) + error_notes(results))


def markdown_table(metadata: dict, results: list) -> str:
    table = rows(metadata, results)
    alignment = ["---"] * TEXT_COLUMNS + ["---:"] * (len(table[0]) - TEXT_COLUMNS)
    return "\n".join("| " + " | ".join(row) + " |" for row in [table[0], alignment] + table[1:])


def write_json(path: Path, metadata: dict, results: list) -> None:
    path.write_text(json.dumps({"metadata": metadata, "results": results}, indent=2) + "\n")


def write_markdown(path: Path, metadata: dict, results: list, plot_name: str | None) -> None:
    lines = [f"# rnnkernels vs torch.nn and oneDNN's RNN on {metadata['device_name']}", ""]
    lines += [f"- {key}: `{value}`" for key, value in metadata.items() if key != "peak"]
    lines += [f"- peak: {describe_peaks(metadata['peak'])}"]
    lines += ["", EXPLANATION, markdown_table(metadata, results), ""]
    notes = error_notes(results)
    if notes:
        lines += ["Errors:", "", *notes, ""]
    if plot_name:
        lines += [f"![speedup per case]({plot_name})", ""]
    path.write_text("\n".join(lines))


def write_plot(path: Path, metadata: dict, results: list) -> bool:
    """Bar charts of rnnkernels' speedup per case: a panel per baseline (torch.nn, oneDNN) and
    mode, a bar colour per kind. Returns False, and writes nothing, when matplotlib is not
    installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on benchmark machines
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed: no plot written (pip install matplotlib)", file=sys.stderr
        )
        return False

    baselines = [library for library in metadata["libraries"] if library != "rnnkernels"]
    panels = [
        (baseline, mode, [result for result in results if result["mode"] == mode])
        for baseline in baselines
        for mode in MODES
        if any(result["mode"] == mode for result in results)
    ]
    most_cases = len({case_of(result).label() for result in results})
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(max(7, 1.3 * most_cases), 3.6 * len(panels)), squeeze=False
    )
    for axis, (baseline, mode, mode_results) in zip(axes[:, 0], panels):
        draw_speedups(axis, mode_results, baseline)
        axis.set_title(f"{mode}: speedup over {baseline}", loc="left", fontsize=10)
    axes[0, 0].legend(
        fontsize=8, ncols=len(KINDS), loc="lower right", bbox_to_anchor=(1, 1), frameon=False
    )
    figure.suptitle(
        f"rnnkernels: {metadata['device_name']}, {metadata['dtype']}, "
        f"threads: {metadata['threads']}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def draw_speedups(axis, results: list, baseline: str) -> None:
    """Grouped bars on one axis: a group per case where both sides ran, a bar per kind."""
    from matplotlib.ticker import FuncFormatter

    results = [result for result in results if result["speedup"][baseline] is not None]
    if not results:
        axis.text(0.5, 0.5, "no case ran on both", ha="center", transform=axis.transAxes)
        return
    labels = list(dict.fromkeys(case_of(result).label() for result in results))
    kinds = [kind for kind in KINDS if any(result["kind"] == kind for result in results)]
    bar_width = 0.8 / len(kinds)
    for index, kind in enumerate(kinds):
        speedups = {
            case_of(result).label(): result["speedup"][baseline]
            for result in results
            if result["kind"] == kind
        }
        positions = [position for position, label in enumerate(labels) if label in speedups]
        values = [speedups[labels[position]] for position in positions]
        offset = (index - (len(kinds) - 1) / 2) * bar_width
        # Bars grow from 1x, up for speedups and down for slowdowns.
        bars = axis.bar(
            [position + offset for position in positions],
            [value - 1 for value in values],
            bar_width,
            bottom=1,
            label=kind.upper(),
            color=KIND_COLORS[kind],
        )
        axis.bar_label(bars, labels=[f"{value:.3g}" for value in values], fontsize=7, padding=1)
    axis.axhline(1.0, color="black", linewidth=0.8)
    # Speedups and slowdowns are symmetric on a log axis: 2x and 0.5x sit equally far from 1x.
    axis.set_yscale("log", base=2)
    axis.margins(y=0.15)
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    axis.set_ylabel(f"{baseline} time / rnnkernels time", fontsize=9)
    axis.grid(axis="y", alpha=0.3)
    axis.set_xticks(range(len(labels)), [textwrap.fill(label, 16) for label in labels], fontsize=7)
