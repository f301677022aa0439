"""The generated block of `fpbench reproduce` reports: `<!-- board:start zoo=NAME table=reproduce -->`.

Reads every `<results_dir>/reproduce/<zoo>*.json` that `fpbench reproduce --out` wrote (docs/sharing.md,
"Reproduce a board") and renders one row per report: where it ran (CPU, kernel level, threads) and how
many result files re-scored identically. Plain JSON reading: the report layer does not import the loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report.cells import md_text

FORMAT = "fpbench-reproduce"
HEADER = ("| report | CPU (kernels, threads) | result files | identical | differ | not re-scored "
          "| suspects with a changed score | max abs Δ score | max abs Δ AUC |")


def reports(results_dir: Path, zoo: str) -> list[tuple[str, dict[str, Any]]]:
    """(file name, report) of every reproduce report of `zoo` under `results_dir/reproduce`, sorted by name."""
    folder = results_dir / "reproduce"
    out = []
    for path in sorted(folder.glob(f"{zoo}*.json")) if folder.is_dir() else []:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("format") == FORMAT and data.get("zoo") == zoo:
            out.append((path.name, data))
    return out


def _row(name: str, link: str, report: dict[str, Any]) -> str:
    files, hw, counts = report["files"], report.get("hardware") or {}, report["counts"]
    rescored = [f for f in files if f["status"] != "not rescored"]
    changed = sum(f["differing"] for f in rescored)
    suspects = sum(f["suspects"] for f in rescored)
    worst = max((f["max_abs_diff"] for f in rescored), default=0.0)
    auc = max((abs(f["auc_diff"]) for f in rescored if f["auc_diff"] is not None), default=0.0)
    where = f"{hw.get('cpu') or '?'} ({hw.get('cpu_capability') or '?'}, {hw.get('scoring_threads', '?')})"
    return (f"| [{md_text(name)}]({link}) | {md_text(where)} | {len(files)} | {counts['identical']} | {counts['differs']} "
            f"| {counts['not rescored']} | {changed} of {suspects} | {worst:.3g} | {auc:.3g} |")


def reproduce_block(results_dir: Path, zoo: str, link: Any) -> str:
    """The block's body: the table of `zoo`'s reproduce reports, or a line saying there is none."""
    found = reports(results_dir, zoo)
    if not found:
        return f"\nNo `fpbench reproduce` report of zoo `{zoo}` under {results_dir.name}/reproduce.\n"
    sep = "|" + "---|" * HEADER.count(" | ") + "---|"
    rows = [_row(name, link(f"reproduce/{name}"), report) for name, report in found]
    return "\n" + "\n".join([HEADER, sep, *rows]) + "\n"
