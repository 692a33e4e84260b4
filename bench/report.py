"""Turn pytest-benchmark JSON into bench/RESULTS.md tables (ratios from the same run).

Usage: python bench/report.py RUN.json [RUN2.json ...] --command "..." > bench/RESULTS.md
A group found in several files is taken whole from the last one. Each group becomes a table: backend, median time, rate, peak memory, agreement with the
reference, and the speed-up over the reference and over torch measured in that same run.
Groups named ``floor-<workload>`` (bench_floor.py) together become one table instead, a row per
workload: the engine's times next to its floor's parts, the reference and the authors' way.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def _ratio(base: float | None, value: float) -> str:
    return f"{base / value:.1f}×" if base else "–"


def _cell(key: str, value) -> str:
    if value is None:
        return "–"
    return f"{value:.0%}" if key.startswith("fraction") else str(value)


def _seconds(value) -> str:
    return "–" if value is None else f"{value:.3g}"


def render_floor(groups: dict[str, list]) -> list[str]:
    """One table, a row per ``floor-<workload>`` group (the methods of bench_floor.py)."""
    lines = [
        "| workload | n × d, K | engine fit s | engine predict s | engine s | floor Gram s | "
        "floor eigh s | floor scoring s | floor s | engine / floor | reference s | authors s | "
        "Σ r_k (Σ min(r_k, d − r_k)) | r_k = reference | agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group, benches in groups.items():
        rows = {b["extra_info"].get("method"): b for b in benches}
        median = {method: bench["stats"]["median"] for method, bench in rows.items()}
        engine = rows.get("engine", {}).get("extra_info", {})
        floor = rows.get("floor", {}).get("extra_info", {})
        info = engine or floor or benches[0]["extra_info"]
        ratio = median.get("engine"), median.get("floor")
        agreement = engine.get("agreement_with_reference")
        equal = engine.get("ranks_equal_reference")
        lines.append(
            f"| {group.removeprefix('floor-')} | {info.get('shape', '–')} | "
            f"{_seconds(engine.get('fit_s'))} | {_seconds(engine.get('predict_s'))} | "
            f"{_seconds(median.get('engine'))} | {_seconds(floor.get('gram_s'))} | "
            f"{_seconds(floor.get('eigh_s'))} | {_seconds(floor.get('scoring_s'))} | "
            f"{_seconds(median.get('floor'))} | "
            f"{f'{ratio[0] / ratio[1]:.2f}×' if all(ratio) else '–'} | "
            f"{_seconds(median.get('reference'))} | {_seconds(median.get('authors'))} | "
            f"{info.get('components', '–')} ({info.get('complement_columns', '–')}) | "
            f"{'–' if equal is None else ('yes' if equal else 'no')} | "
            f"{'–' if agreement is None else f'{agreement:.4%}'} |"
        )
    lines += [
        "",
        "Where the engine's time goes (its pieces run apart, medians; engine / floor):",
        "",
        "| workload | Gram s | eigensolve s (solver per class) | scoring s | "
        "engine s − its pieces |",
        "|---|---|---|---|---|",
    ]
    for group, benches in groups.items():
        rows = {b["extra_info"].get("method"): b for b in benches}
        engine = rows.get("engine", {}).get("extra_info", {})
        floor = rows.get("floor", {}).get("extra_info", {})
        pieces = [engine.get(key) for key in ("gram_s", "eigensolve_s", "scoring_s")]
        total = rows.get("engine", {}).get("stats", {}).get("median")
        rest = total - sum(pieces) if total is not None and None not in pieces else None
        solvers = ", ".join(f"{n} {name}" for name, n in engine.get("eigensolver", {}).items())
        lines.append(
            f"| {group.removeprefix('floor-')} | {_versus(pieces[0], floor.get('gram_s'))} | "
            f"{_versus(pieces[1], floor.get('eigh_s'))} ({solvers or '–'}) | "
            f"{_versus(pieces[2], floor.get('scoring_s'))} | {_seconds(rest)} |"
        )
    return lines + [""]


def _versus(engine, floor) -> str:
    """``engine / floor (ratio×)`` in seconds."""
    if engine is None or floor is None:
        return "–"
    return f"{_seconds(engine)} / {_seconds(floor)} ({engine / floor:.2f}×)"


def render(paths, command: str) -> str:
    groups: dict[str, list] = defaultdict(list)
    source: dict[str, str] = {}
    header = None
    for path in paths:  # a group measured again in a later file replaces the earlier run
        with open(path) as handle:
            run = json.load(handle)
        header = header or run
        for bench in run["benchmarks"]:
            if source.get(bench["group"]) != path:
                groups[bench["group"]] = []
                source[bench["group"]] = path
            groups[bench["group"]].append(bench)
    info = header["machine_info"]
    first = groups[next(iter(groups))][0]["extra_info"] if groups else {}
    lines = [
        f"Machine: {first.get('device') or info.get('cpu', {}).get('brand_raw', info['machine'])}, "
        f"{first.get('cpu_count', '?')} cores, torch {first.get('torch', '?')} "
        f"({first.get('torch_threads', '?')} threads); commit {first.get('commit', '?')}; "
        f"date {header['datetime'][:10]}.",
        f"Command: `{command}`",
        "",
    ]
    floor = {group: benches for group, benches in groups.items() if group.startswith("floor-")}
    if floor:
        lines += render_floor(floor)
    for group, benches in groups.items():
        if group in floor:
            continue
        medians = {b["extra_info"].get("backend"): b["stats"]["median"] for b in benches}
        # Columns only some benchmarks record (GPU runs), shown where a group has them.
        optional = [
            (key, title)
            for key, title in (
                ("cuda_peak_memory_mb", "peak GPU MB"),
                ("fraction_of_gemm_ceiling", "of GEMM ceiling"),
            )
            if any(b["extra_info"].get(key) is not None for b in benches)
        ]
        # Groups that time several torch compositions (CPU kernels) compare with the fastest.
        torch_runs = {k: v for k, v in medians.items() if k and k.startswith("torch")}
        best_torch = min(torch_runs, key=torch_runs.get) if len(torch_runs) > 1 else None
        peaks = {
            b["extra_info"].get("backend"): b["extra_info"].get("peak_memory_mb") for b in benches
        }
        if best_torch:
            optional += [
                ("_vs_best_torch", f"vs best torch ({best_torch})"),
                ("_memory_vs_best_torch", "best-torch peak / peak"),
            ]
        titles = "".join(f" {title} |" for _, title in optional)
        lines += [
            f"### {group}",
            "",
            "| backend | median s | rate | peak MB |" + titles + " components | agreement | "
            "vs reference | vs torch |",
            "|---|---|---|---|" + "---|" * len(optional) + "---|---|---|---|",
        ]
        for bench in benches:
            extra, median = bench["extra_info"], bench["stats"]["median"]
            agreement = extra.get("agreement_with_reference")
            if best_torch:
                extra = dict(extra)
                extra["_vs_best_torch"] = _ratio(medians[best_torch], median)
                peak, torch_peak = extra.get("peak_memory_mb"), peaks.get(best_torch)
                extra["_memory_vs_best_torch"] = (
                    f"{torch_peak / peak:.1f}×" if peak and torch_peak else "–"
                )
            cells = "".join(f" {_cell(key, extra.get(key))} |" for key, _ in optional)
            lines.append(
                f"| {extra.get('backend')} | {median:.3f} | {extra.get('rate', '–')} | "
                f"{extra.get('peak_memory_mb', '–')} |{cells} {extra.get('components', '–')} | "
                f"{'–' if agreement is None else f'{agreement:.4%}'} | "
                f"{_ratio(medians.get('reference'), median)} | {_ratio(medians.get('torch'), median)} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--command", required=True, help="the command that produced the JSON")
    args = parser.parse_args()
    print(render(args.paths, args.command))


if __name__ == "__main__":
    main()
