"""Times rnnkernels against torch.nn and, on the CPU, oneDNN's RNN primitive (LSTM, GRU, RNN;
inference and training; padded, packed and autocast rows) and writes <out>/<device>.json, .md
and .png. Run `python bench/run.py --help` for the options."""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (`python bench/run.py`): make the repository root importable so that
    # `bench` resolves as a package, as it does under `python -m bench`.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench import native, report
from bench.measure import Budget, add_peak_fraction, libraries_for, measure
from bench.peak import higher_peaks, measure_peaks
from bench.shapes import (
    AUTOCAST_DTYPES,
    DEFAULT_AUTOCAST,
    DEFAULT_GRID,
    DEFAULT_PACKED,
    DEFAULT_PIECES,
    KINDS,
    MODES,
    TORCH_NN_KINDS,
    Case,
    Shape,
)

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
# (rounds, min_run_time seconds). Quick is README's main command: it must stay within a few
# minutes for the whole default grid on a 2-core CPU, so slow shapes get a single round (see
# Budget).
QUICK_BUDGET = (3, 0.03)
FULL_BUDGET = (5, 0.3)
# Seconds the peak FMA loops run, at the start and at the end of a run.
PEAK_MIN_RUN_TIME = 1.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    shapes = parser.add_argument_group(
        "rows",
        "any of these replaces the default rows (the grid, a packed row and bfloat16 autocast "
        "rows) by the product of the values given",
    )
    shapes.add_argument("--seq-len", nargs="+", type=int, help="default 50")
    shapes.add_argument("--batch", nargs="+", type=int, help="default 32")
    shapes.add_argument("--input-size", nargs="+", type=int, help="default: the hidden size")
    shapes.add_argument(
        "--hidden-size", nargs="+", type=int, help="default: the input size, else 256"
    )
    shapes.add_argument(
        "--packed",
        action="store_true",
        help="input as a PackedSequence, lengths spread evenly from seq_len / 10 to seq_len",
    )
    shapes.add_argument(
        "--autocast",
        choices=AUTOCAST_DTYPES,
        help="run the layers under torch.autocast in this dtype (the modules stay in --dtype)",
    )
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--threads", type=int, default=2, help="threads, for the layers and the peak loops"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"rounds, min run time = {QUICK_BUDGET} instead of {FULL_BUDGET}",
    )
    parser.add_argument(
        "--rounds", type=int, help="most alternations of the libraries per measurement"
    )
    parser.add_argument(
        "--min-run-time", type=float, help="seconds each library measures per round"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="output folder",
    )
    return parser.parse_args(argv)


def square(sizes) -> list[tuple]:
    """(seq_len, batch, width) -> (seq_len, batch, input_size, hidden_size), I = H."""
    return [(steps, batch, width, width) for steps, batch, width in sizes]


def given_sizes(args: argparse.Namespace) -> list[tuple]:
    """The product of the shape options given, or the grid where none is."""
    if not any((args.seq_len, args.batch, args.input_size, args.hidden_size)):
        return square(DEFAULT_GRID)
    given = itertools.product(
        args.seq_len or [50],
        args.batch or [32],
        args.input_size or [None],
        args.hidden_size or [None],
    )
    return [
        (steps, batch, input_size or hidden_size or 256, hidden_size or input_size or 256)
        for steps, batch, input_size, hidden_size in given
    ]


def cases_from(args: argparse.Namespace) -> list[Case]:
    """The default rows (torch.nn's kinds: the grid, packed and autocast rows; the others:
    DEFAULT_PIECES), or, where any row option is given, the product of those given."""
    row_options = (args.seq_len, args.batch, args.input_size, args.hidden_size)
    if any(row_options + (args.packed, args.autocast)):
        rows = [(size, args.packed, args.autocast) for size in given_sizes(args)]
        pieces_rows = rows
    else:
        autocast_dtype, autocast_sizes = DEFAULT_AUTOCAST
        rows = [(size, False, None) for size in square(DEFAULT_GRID)]
        rows += [(size, True, None) for size in square(DEFAULT_PACKED)]
        rows += [(size, False, autocast_dtype) for size in square(autocast_sizes)]
        pieces_rows = [(size, False, None) for size in square(DEFAULT_PIECES)]
    return [
        Case(kind, mode, Shape(*size, layers=args.layers, bidirectional=args.bidirectional,
                               packed=packed), cast)
        for kind in args.kind
        for mode in args.mode
        for size, packed, cast in (rows if kind in TORCH_NN_KINDS else pieces_rows)
    ]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return completed.stdout.strip()


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none): other work running
    beside the benchmark makes its timings noisy, with several threads per layer especially."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def onednn_rnn_note(device: torch.device, libraries: tuple) -> str:
    """Which oneDNN the oneDNN column ran, or why the run has none."""
    if "oneDNN" in libraries:
        built = native.load()
        return f"oneDNN {built.module.onednn_version()} from {built.onednn_root}"
    if device.type != "cpu":
        return "not measured: CPU only"
    return f"not measured: {native.load().missing}"


def metadata(
    args: argparse.Namespace,
    device: torch.device,
    budget: Budget,
    load: float,
    libraries: tuple,
    peaks: dict,
) -> dict:
    return {
        "device": str(device),
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "rounds": budget.rounds,
        "min_run_time": budget.min_run_time,
        "load_average_at_start": load,
        "libraries": list(libraries),
        "onednn_rnn": onednn_rnn_note(device, libraries),
        "peak": peaks,
    }


class Progress:
    """One status line on stderr: steps done, elapsed time and what runs now."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        # A terminal gets one line rewritten in place; a log file gets one line per step.
        self.interactive = sys.stderr.isatty()

    def show(self, what: str) -> None:
        elapsed = time.monotonic() - self.start
        clear_line = "\x1b[2K" if self.interactive else ""
        end = "\r" if self.interactive else "\n"
        print(
            f"{clear_line}[{self.done}/{self.total}] {elapsed:4.0f}s  {what}",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    def step(self) -> None:
        self.done += 1

    def close(self) -> None:
        self.show("done")
        if self.interactive:
            print(file=sys.stderr)


def write_reports(stem: Path, info: dict, results: list) -> None:
    """<stem>.json, .md and, with matplotlib, .png."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    plot = stem.with_suffix(".png")
    report.write_json(stem.with_suffix(".json"), info, results)
    plot_written = report.write_plot(plot, info, results)
    report.write_markdown(
        stem.with_suffix(".md"), info, results, plot.name if plot_written else None
    )
    print(f"written: {stem}.json, .md" + (", .png" if plot_written else ""), file=sys.stderr)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    default_rounds, default_min_run_time = QUICK_BUDGET if args.quick else FULL_BUDGET
    budget = Budget(
        args.rounds or default_rounds, args.min_run_time or default_min_run_time, args.threads
    )
    load = load_average()
    if load is not None and load >= 1:
        print(
            f"warning: load average {load:.1f} before start: timings will be noisy", file=sys.stderr
        )
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cases = cases_from(args)
    libraries = libraries_for(device, cases)
    peaks_at_start = measure_peaks(device, args.threads, PEAK_MIN_RUN_TIME)
    progress = Progress(len(cases))
    results = []
    for case in cases:
        progress.show(f"{case.kind} {case.mode} {case.label()}")
        results.append(measure(case, dtype, device, budget, libraries))
        progress.step()
    progress.close()
    peaks = higher_peaks(peaks_at_start, measure_peaks(device, args.threads, PEAK_MIN_RUN_TIME))
    for result in results:
        add_peak_fraction(result, peaks.get(result["autocast"] or "float32"))

    info = metadata(args, device, budget, load, libraries, peaks)
    write_reports(args.out / device.type, info, results)
    print(report.terminal_table(info, results))


if __name__ == "__main__":
    main()
