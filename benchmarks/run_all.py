"""Run every benchmark (each in its own process) and print one table of ratios.

    python benchmarks/run_all.py [--quick] [--only train_step,mixed,steps] [--results benchmarks/RESULTS.md]

Each benchmark times deltatune against its references interleaved in the same process and
reports medians; a ratio below 1 means deltatune is faster. "met" compares with the target.
The per-method training-step benchmarks (``bench_step_*.py``, found by name; ``--only steps``
runs them all) join the table when they write result rows (``--json``); the ratio lines of the
others are printed after it, as each script prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import Row, environment, table  # noqa: E402

STEPS = sorted(f[len("bench_") : -len(".py")] for f in os.listdir(HERE) if re.fullmatch(r"bench_step_\w+\.py", f))
BENCHMARKS = ["train_step", "inject", "mixed", "load", "prompt_generate", *STEPS]
# A line of a step script's output that reports a ratio: a table header, "0.95x", "deltatune/PEFT 0.98",
# or a verdict at the end of the line.
RATIO_LINE = re.compile(r"\d\.\d+x\b|deltatune ?/ ?\w|\bratio\b|\btarget\b|\b(ok|MISSED|SLOWER|met)\s*\|?\s*$")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, few repeats")
    p.add_argument("--only", default="", help="comma-separated subset of steps (all step_*), " + ",".join(BENCHMARKS))
    p.add_argument("--threads", type=int, default=1, help="torch threads per benchmark (0 = torch's default)")
    p.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto", help="see the benchmarks' --help")
    p.add_argument("--results", default=None, help="also write the table as Markdown to this file")
    args = p.parse_args(argv)
    chosen = [b for b in args.only.split(",") if b] or BENCHMARKS
    chosen = list(dict.fromkeys(s for b in chosen for s in (STEPS if b == "steps" else [b])))
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}")

    env = environment()
    env["torch_threads"] = str(args.threads) if args.threads > 0 else env["torch_threads"]
    clock = args.clock if args.clock != "auto" else ("cpu" if env["torch_threads"] == "1" else "wall")
    header = (
        f"{env['date']} | {env['cpu']} | nproc={env['nproc']}, load average {env['loadavg']} at start, "
        f"torch threads={env['torch_threads']}, "
        f"clock={clock} (median of interleaved runs) | "
        f"python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
        f"peft {env['peft']}, deltatune {env['deltatune']}"
    )
    print("#", header, flush=True)
    rows: list[Row] = []
    ratio_lines: dict[str, list[str]] = {}  # step scripts that print their ratios rather than write rows
    failed: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            out = os.path.join(tmp, f"{name}.json")
            script = os.path.join(HERE, f"bench_{name}.py")
            writes_rows = name not in STEPS or _speaks_common_cli(script)
            cmd = [sys.executable, script, "--threads", str(args.threads)]
            if writes_rows:
                cmd += ["--no-env", "--json", out, "--clock", args.clock]
            if args.quick:
                cmd.append("--quick")
            print(f"\n=== {name} ===", flush=True)
            t0 = time.perf_counter()
            code, printed = _run(cmd)
            print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
            if not writes_rows:
                ratio_lines[name] = [line for line in printed if _is_ratio_line(line)]
            if code != 0 or (writes_rows and not os.path.exists(out)):
                failed.append(name)
                continue
            if writes_rows:
                with open(out, encoding="utf-8") as f:
                    rows.extend(Row(**item) for item in json.load(f))
    total = time.perf_counter() - started
    print(f"\n=== summary ({total:.0f} s{', quick' if args.quick else ''}) ===")
    print("#", header)
    print(table(rows))
    for name, lines in ratio_lines.items():
        print(f"\n{name} (its own ratio lines):")
        print("\n".join(lines) if lines else "  (no ratio line printed)")
    if args.quick:
        print("(--quick: smoke run on toy sizes; these ratios say nothing about real speed)")
    if failed:
        print(f"FAILED to run: {failed}")
    if args.results:
        write_markdown(args.results, header, rows, quick=args.quick, ratio_lines=ratio_lines)
        print(f"wrote {args.results}")
    return 1 if failed else 0


def _speaks_common_cli(script: str) -> bool:
    """Whether a step script takes _common's options (--json, --no-env, --clock) and writes Rows."""
    with open(script, encoding="utf-8") as f:
        source = f.read()
    return "from _common import" in source and "parser(" in source and "finish(" in source


def _run(cmd: list[str]) -> tuple[int, list[str]]:
    """Run ``cmd``, echoing its output as it comes; (exit code, the lines it printed)."""
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
    return proc.returncode, lines


def _is_ratio_line(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#") and not set(text) <= set("|-: ") and bool(RATIO_LINE.search(text))


def write_markdown(
    path: str, header: str, rows: list[Row], quick: bool, ratio_lines: dict[str, list[str]] | None = None
) -> None:
    notes = "\n".join(f"- `{r.bench}`: {r.note}" for r in {r.bench: r for r in rows}.values() if r.note)
    for name, lines in (ratio_lines or {}).items():
        notes += f"\n\n`{name}` (its own ratio lines):\n\n```\n" + "\n".join(lines) + "\n```"
    text = (
        "# Benchmark results\n\n"
        f"{header}\n\n"
        f"Produced by `python benchmarks/run_all.py{' --quick' if quick else ''}`; medians of interleaved runs; "
        "ratio = deltatune time / reference time (below 1: deltatune is faster).\n\n"
        f"{table(rows)}\n\n{notes}\n"
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
