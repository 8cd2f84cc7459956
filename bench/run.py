"""Times rnnkernels against torch.nn (LSTM, GRU, RNN; inference and training) and writes
<out>/<device>.json, .md and .png. Run `python bench/run.py --help` for the options."""

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

from bench import report
from bench.gemm_bound import GemmBound
from bench.measure import Budget, measure
from bench.shapes import DEFAULT_GRID, KINDS, MODES, Shape

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
# (rounds, min_run_time seconds). Quick is README's main command: it must stay under 2 minutes
# for the whole grid on a 2-core CPU, so slow shapes get a single round (see Budget).
QUICK_BUDGET = (3, 0.03)
FULL_BUDGET = (5, 0.3)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    shapes = parser.add_argument_group(
        "shapes", "any of these replaces the default grid by the product of the values given"
    )
    shapes.add_argument("--seq-len", nargs="+", type=int, help="default 50")
    shapes.add_argument("--batch", nargs="+", type=int, help="default 32")
    shapes.add_argument("--input-size", nargs="+", type=int, help="default: the hidden size")
    shapes.add_argument(
        "--hidden-size", nargs="+", type=int, help="default: the input size, else 256"
    )
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads, for the layers and the GEMM bound"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"rounds, min run time = {QUICK_BUDGET} instead of {FULL_BUDGET}",
    )
    parser.add_argument(
        "--rounds", type=int, help="most alternations of the two libraries per measurement"
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


def shapes_from(args: argparse.Namespace) -> list[Shape]:
    if not any((args.seq_len, args.batch, args.input_size, args.hidden_size)):
        sizes = [(steps, batch, width, width) for steps, batch, width in DEFAULT_GRID]
    else:
        given = itertools.product(
            args.seq_len or [50],
            args.batch or [32],
            args.input_size or [None],
            args.hidden_size or [None],
        )
        sizes = [
            (steps, batch, input_size or hidden_size or 256, hidden_size or input_size or 256)
            for steps, batch, input_size, hidden_size in given
        ]
    return [Shape(*size, layers=args.layers, bidirectional=args.bidirectional) for size in sizes]


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


def metadata(args: argparse.Namespace, device: torch.device, budget: Budget, load: float) -> dict:
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

    gemm_bound = GemmBound(dtype, device, args.threads, budget.min_run_time)
    runs = list(itertools.product(args.kind, args.mode, shapes_from(args)))
    progress = Progress(len(runs))
    results = []
    for kind, mode, shape in runs:
        progress.show(f"{kind} {mode} {shape.label()}")
        results.append(measure(kind, mode, shape, dtype, device, budget, gemm_bound))
        progress.step()
    progress.close()

    write_reports(args.out / device.type, metadata(args, device, budget, load), results)
    print(report.terminal_table(results))


if __name__ == "__main__":
    main()
