"""The generated block of a multi-trial run's wall time by phase: `<!-- board:start zoo=NAME table=cost -->`.

Reads `<results_dir>/perf/trials-<zoo>.json`, which `fpbench run` writes for a recipe with two or more trials
(docs/recipes.md, "Trials"), and renders one row per trial: the models it trained, the seconds of each
phase (zoo, every method's generation together, verification, report) and the trial's whole time, then the
machine it ran on. A trial whose zoo was already built shows the zoo phase it really took (checking the
built models), not the cost of building them: the block says how many models each trial trained. Plain
JSON reading: the report layer does not import the loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bench.report.cells import md_text

HEADER = "| trial | seed (source seed) | models trained | zoo s | generate s | verify s | report s | trial s |"


def _phases(phases: dict[str, float]) -> tuple[float, float, float, float]:
    generate = sum(v for k, v in phases.items() if k.startswith("generate"))
    return phases.get("zoo", 0.0), generate, phases.get("verify", 0.0), phases.get("report", 0.0)


def _row(label: str, seeds: str, models: str, phases: dict[str, float], seconds: float) -> str:
    zoo, generate, verify, report = _phases(phases)
    return (f"| {label} | {seeds} | {models} | {zoo:,.0f} | {generate:,.0f} | {verify:,.0f} | {report:,.0f} "
            f"| {seconds:,.0f} |")


def cost_block(results_dir: Path, zoo: str, link: Callable[[str], str] = str) -> str:
    """The block's body: the trials' phase table of `<results_dir>/perf/trials-<zoo>.json`, or one line
    saying that no such file exists."""
    rel = f"perf/trials-{zoo}.json"
    path = results_dir / rel
    if not path.is_file():
        return f"\nNo `{rel}` in the results folder: a run of two or more trials writes it.\n"
    data = json.loads(path.read_text(encoding="utf-8"))
    trials = data.get("per_trial") or []
    lines = [HEADER, "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for t in trials:
        label = f"{t['trial']}" + (" (done before: skipped)" if t.get("skipped") else "")
        lines.append(_row(label, f"{t['seed']} ({t['source_seed']})", f"{t['models_built']}", t["phases"], t["seconds"]))
    lines.append(_row("**all**", "", f"{sum(int(t['models_built']) for t in trials)}",
                      data.get("phase_totals") or {}, float(data.get("wall_seconds", 0.0))))
    hw = data.get("hardware") or {}
    machine = (f"{md_text(str(hw.get('cpu') or '?'))}, {hw.get('cpus_available', '?')} usable CPUs, "
               f"{hw.get('gpus') and len(hw['gpus']) or 'no'} GPU(s)")
    return ("\n" + "\n".join(lines) + f"\n\nSeconds of wall time from [{rel}]({link(rel)}), written by the run: {machine}; "
            f"{data.get('workers', '?')} training worker(s) of {data.get('cpu_threads', '?')} thread(s), executor "
            f"`{data.get('executor', '?')}`. *models trained*: trained by that trial's zoo phase (0: its zoo was "
            "already built, so its zoo seconds are the check of the built models, not their training).\n")
