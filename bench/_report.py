"""The parts of a benchmark report that every service benchmark prints the same way."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "command_line",
    "emit_report",
    "fmt",
    "print_errors",
    "print_load_table",
    "print_machine",
    "print_ratios",
    "print_targets",
]


def command_line(module: str, argv: Iterable[str]) -> str:
    """How this run was started, as a shell line (the interpreter relative to the working directory)."""
    executable = Path(sys.executable)
    try:
        shown = str(executable.relative_to(Path.cwd()))
    except ValueError:
        shown = str(executable)
    return shlex.join([shown, "-m", module, *argv])


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """``value`` formatted by ``spec``; a dash as wide when it is unknown."""
    if value is None:
        width = "".join(char for char in spec.split(".")[0] if char.isdigit())
        return f"{'-':>{int(width or 1) + len(suffix)}}"
    return f"{value:{spec}}{suffix}"


def print_machine(report: Mapping[str, Any], title: str) -> None:
    machine = report["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items() if version)
    load = " ".join(f"{value:g}" for value in machine["load_average"] or [])
    print(title)
    print(f"command : {report['command']}")
    print(
        f"machine : {machine['cpu_count']} CPUs ({machine['usable_cpus']} usable), {machine['cpu_model']}, "
        f"load avg at start {load}; {machine['system']}, Python {machine['python']}"
    )
    print(f"versions: {versions}")


def print_load_table(report: Mapping[str, Any], scenarios: Iterable[str]) -> None:
    header = (
        f"{'scenario':<9}{'side':<12}{'req/s':>7}  {'per round':<24}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'app ms/req':>11}{'pg ms/req':>10}{'app cores':>10}{'client':>7}{'requests':>9}"
    )
    print(header)
    print("-" * len(header))
    for scenario in scenarios:
        for side, row in report["results"].get(scenario, {}).items():
            rounds = " ".join(f"{value:.0f}" for value in row["round_throughputs_rps"])
            cpu = row["cpu_ms_per_request"]
            print(
                f"{scenario:<9}{side:<12}{row['throughput_rps']:>7.0f}  {rounds:<24}{row['p50_ms']:>8.1f}"
                f"{row['p99_ms']:>8.1f}{row['max_ms']:>8.1f}{fmt(cpu.get('app'), '>11.3f')}"
                f"{fmt(cpu.get('postgres'), '>10.3f')}{fmt(row['app_cores'], '>10.2f')}"
                f"{row['client_cpu_share']:>7.2f}{row['requests']:>9}"
            )
    print("(pg = the whole PostgreSQL server, shared with anything else using it; client = this process's core share)")


def print_ratios(report: Mapping[str, Any], sides: Mapping[str, tuple[str, str]], label_width: int) -> None:
    header = f"{'ratios':<9}{'':<{label_width}}{'req/s':>8}{'p50':>8}{'p99':>8}{'app CPU':>9}  per-round req/s ratios"
    print(header)
    print("-" * len(header))
    for scenario, ratio in report["ratios"].items():
        target_name, baseline_name = sides[scenario]
        rounds = " ".join(f"{value:.2f}" for value in ratio["round_throughputs"] if value is not None)
        print(
            f"{scenario:<9}{f'{target_name}/{baseline_name}':<{label_width}}{fmt(ratio['throughput'], '>7.2f', 'x')}"
            f"{fmt(ratio.get('p50'), '>7.2f', 'x')}{fmt(ratio.get('p99'), '>7.2f', 'x')}"
            f"{fmt(ratio.get('app_cpu_per_request'), '>8.2f', 'x')}  {rounds}"
        )


def print_targets(report: Mapping[str, Any], scenario_width: int) -> None:
    print("targets")
    for verdict in report["targets"]:
        value = verdict["value"]
        shown = "-" if value is None else f"{value:,.3f}".rstrip("0").rstrip(".")
        needs = verdict.get("needs_rps_above")
        reachable = (
            f"; with {report['settings']['concurrency']} clients only reachable above {needs:,} req/s)"
            if needs
            else ")"
        )
        print(
            f"  {verdict['verdict']:<5}{verdict['scenario']:<{scenario_width}}{verdict['metric']:<26}{shown:>12}"
            f"  (target {verdict['target']}{reachable}"
        )


def print_errors(report: Mapping[str, Any]) -> None:
    errors = report["errors"]
    print()
    if errors["total"]:
        print(f"ERRORS: {errors['total']} failed or wrong answers: {errors['by_phase']}")
        for example in errors["examples"]:
            print(f"  {example}")
    else:
        print("errors: none (every answer checked)")


def emit_report(
    report: Mapping[str, Any], as_json: bool, print_tables: Callable[[Mapping[str, Any]], None], failures: int = 0
) -> int:
    """Print the report (JSON or tables) and the exit status: 1 when any answer was failed or wrong."""
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_tables(report)
    if failures:
        print(f"FAILED: {failures} failed or wrong answers (see errors above)", file=sys.stderr, flush=True)
        return 1
    return 0
