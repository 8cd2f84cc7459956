"""Writes the results: a terminal table, <device>.json, <device>.md and <device>.png."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.measure import LIBRARIES
from bench.shapes import KINDS, MODES, Shape

COLUMNS = (
    "kind",
    "mode",
    "shape",
    "torch.nn ms",
    "rnnkernels ms",
    "speedup",
    "GEMM bound ms",
    "eff. torch.nn",
    "eff. rnnkernels",
    "saved torch.nn",
    "saved rnnkernels",
    "max abs diff",
)
TEXT_COLUMNS = 3  # the rest are numbers, aligned right

KIND_COLORS = {"lstm": "#4c72b0", "gru": "#dd8452", "rnn": "#55a868"}

EXPLANATION = """\
- speedup: torch.nn median time / rnnkernels median time (above 1: rnnkernels is faster).
- GEMM bound: the layer's GEMMs (input projection, per-step recurrent products and, when
  training, the backward ones) timed alone with the project's GEMM (float32 on the CPU: oneDNN's
  matmul with a prepacked weight); eff. = bound / layer time.
- saved: unique storages autograd saved for backward during the forward (input and
  weights included), from `torch.autograd.graph.saved_tensors_hooks`.
- max abs diff: largest difference of rnnkernels' outputs from torch.nn's, same weights.
"""


def milliseconds(seconds: float) -> str:
    value = seconds * 1e3
    decimals = 0 if value >= 100 else 1 if value >= 10 else 2 if value >= 1 else 3
    return f"{value:.{decimals}f}"


def byte_size(count: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def table_row(result: dict) -> list[str]:
    return [
        result["kind"],
        result["mode"],
        Shape(**result["shape"]).label(),
        *(milliseconds(result["median_seconds"][library]) for library in LIBRARIES),
        f"{result['ratio']:.2f}x",
        milliseconds(result["gemm_bound_seconds"]),
        *(f"{result['efficiency'][library]:.0%}" for library in LIBRARIES),
        *(byte_size(result["saved_bytes"][library]) for library in LIBRARIES),
        f"{result['max_abs_diff']:.1e}",
    ]


def terminal_table(results: list) -> str:
    rows = [list(COLUMNS)] + [table_row(result) for result in results]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]

    def line(row):
        cells = (
            cell.ljust(width) if column < TEXT_COLUMNS else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths))
        )
        return "  ".join(cells)

    return "\n".join(
        [line(rows[0]), "  ".join("-" * width for width in widths)]
        + [line(row) for row in rows[1:]]
    )


def markdown_table(results: list) -> str:
    alignment = ["---"] * TEXT_COLUMNS + ["---:"] * (len(COLUMNS) - TEXT_COLUMNS)
    rows = [list(COLUMNS), alignment] + [table_row(result) for result in results]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def write_json(path: Path, metadata: dict, results: list) -> None:
    path.write_text(json.dumps({"metadata": metadata, "results": results}, indent=2) + "\n")


def write_markdown(path: Path, metadata: dict, results: list, plot_name: str | None) -> None:
    lines = [f"# rnnkernels vs torch.nn on {metadata['device_name']}", ""]
    lines += [f"- {key}: `{value}`" for key, value in metadata.items()]
    lines += ["", EXPLANATION, markdown_table(results), ""]
    if plot_name:
        lines += [f"![speedup per shape]({plot_name})", ""]
    path.write_text("\n".join(lines))


def write_plot(path: Path, metadata: dict, results: list) -> bool:
    """Bar chart of the speedup per shape, one panel per mode, one bar colour per kind.
    Returns False, and writes nothing, when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on benchmark machines
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed: no plot written (pip install matplotlib)", file=sys.stderr
        )
        return False

    modes = [mode for mode in MODES if any(result["mode"] == mode for result in results)]
    shapes = list(dict.fromkeys(Shape(**result["shape"]) for result in results))
    figure, axes = plt.subplots(
        len(modes), 1, figsize=(max(7, 1.5 * len(shapes)), 3.6 * len(modes)), squeeze=False
    )
    for axis, mode in zip(axes[:, 0], modes):
        draw_speedups(axis, [result for result in results if result["mode"] == mode], shapes)
        axis.set_title(mode, loc="left", fontsize=10)
    axes[0, 0].legend(
        fontsize=8, ncols=len(KINDS), loc="lower right", bbox_to_anchor=(1, 1), frameon=False
    )
    figure.suptitle(
        f"rnnkernels speedup over torch.nn: {metadata['device_name']}, {metadata['dtype']}, "
        f"threads: {metadata['threads']}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def draw_speedups(axis, results: list, shapes: list) -> None:
    """Grouped bars on one axis: a group per shape, a bar per kind."""
    from matplotlib.ticker import FuncFormatter

    kinds = [kind for kind in KINDS if any(result["kind"] == kind for result in results)]
    bar_width = 0.8 / len(kinds)
    for index, kind in enumerate(kinds):
        ratios = {
            Shape(**result["shape"]): result["ratio"]
            for result in results
            if result["kind"] == kind
        }
        offset = (index - (len(kinds) - 1) / 2) * bar_width
        speedups = [ratios[shape] for shape in shapes]
        # Bars grow from 1x, up for speedups and down for slowdowns.
        bars = axis.bar(
            [position + offset for position in range(len(shapes))],
            [speedup - 1 for speedup in speedups],
            bar_width,
            bottom=1,
            label=kind.upper(),
            color=KIND_COLORS[kind],
        )
        axis.bar_label(
            bars, labels=[f"{speedup:.3g}" for speedup in speedups], fontsize=7, padding=1
        )
    axis.axhline(1.0, color="black", linewidth=0.8)
    # Speedups and slowdowns are symmetric on a log axis: 2x and 0.5x sit equally far from 1x.
    axis.set_yscale("log", base=2)
    axis.margins(y=0.15)
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    axis.set_ylabel("torch.nn time / rnnkernels time", fontsize=9)
    axis.grid(axis="y", alpha=0.3)
    axis.set_xticks(
        range(len(shapes)), [shape.label().replace(" I=", "\nI=") for shape in shapes], fontsize=8
    )
