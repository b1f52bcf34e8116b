"""Run every benchmark (each in its own process) and print one table of ratios.

    python benchmarks/run_all.py [--quick] [--only train_step,mixed] [--results benchmarks/RESULTS.md]

Each benchmark times deltatune against its references interleaved in the same process and
reports medians; a ratio below 1 means deltatune is faster. "met" compares with the target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import Row, environment, table  # noqa: E402

BENCHMARKS = ["train_step", "inject", "mixed", "load"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, few repeats")
    p.add_argument("--only", default="", help="comma-separated subset of " + ",".join(BENCHMARKS))
    p.add_argument("--threads", type=int, default=1, help="torch threads per benchmark (0 = torch's default)")
    p.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto", help="see the benchmarks' --help")
    p.add_argument("--results", default=None, help="also write the table as Markdown to this file")
    args = p.parse_args(argv)
    chosen = [b for b in args.only.split(",") if b] or BENCHMARKS
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
    failed: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            out = os.path.join(tmp, f"{name}.json")
            cmd = [sys.executable, os.path.join(HERE, f"bench_{name}.py"), "--no-env", "--json", out]
            cmd += ["--threads", str(args.threads), "--clock", args.clock]
            if args.quick:
                cmd.append("--quick")
            print(f"\n=== {name} ===", flush=True)
            t0 = time.perf_counter()
            code = subprocess.call(cmd)
            print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
            if code != 0 or not os.path.exists(out):
                failed.append(name)
                continue
            with open(out, encoding="utf-8") as f:
                rows.extend(Row(**item) for item in json.load(f))
    total = time.perf_counter() - started
    print(f"\n=== summary ({total:.0f} s{', quick' if args.quick else ''}) ===")
    print("#", header)
    print(table(rows))
    if args.quick:
        print("(--quick: smoke run on toy sizes; these ratios say nothing about real speed)")
    if failed:
        print(f"FAILED to run: {failed}")
    if args.results:
        write_markdown(args.results, header, rows, quick=args.quick)
        print(f"wrote {args.results}")
    return 1 if failed else 0


def write_markdown(path: str, header: str, rows: list[Row], quick: bool) -> None:
    notes = "\n".join(f"- `{r.bench}`: {r.note}" for r in {r.bench: r for r in rows}.values() if r.note)
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
