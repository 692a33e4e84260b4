"""Turn pytest-benchmark JSON into bench/RESULTS.md tables (ratios from the same run).

Usage: python bench/report.py RUN.json [RUN2.json ...] --command "..." > bench/RESULTS.md
A group found in several files is taken whole from the last one. Each group becomes a table: backend, median time, rate, peak memory, agreement with the
reference, and the speed-up over the reference and over torch measured in that same run.
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
    for group, benches in groups.items():
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
