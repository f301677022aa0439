"""The generated block of the zoo-throughput benchmark: `<!-- board:start zoo=NAME table=throughput -->`.

Reads `<results_dir>/perf/zoo_throughput.json`, which `fpbench perf zoo_throughput --results-dir results`
writes (`bench.perf.zoo_throughput`): the recipe's zoo built from scratch by the `before`, `workers` and
`after` paths in interleaved rounds. Renders one row per path (wall seconds per round, models per hour,
nominal images per second and GFLOP/s, the speedup over `before` per round), then what `before` was, the
matmul rates beside them, and the accuracy differences against the zoo's own seed-to-seed noise. Plain
JSON reading: the report layer does not import the benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

REL = "perf/zoo_throughput.json"
HEADER = "| path | how | wall s (rounds) | models/hour | images/s | GFLOP/s | speedup (rounds) |"
WHAT = {"workers": "worker processes on every core, contiguous weights",
        "after": "worker processes and channels-last weights: the current default"}


def _rounds(values: list[float], digits: int) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _row(name: str, path: dict[str, Any], how: str, speedup: float, per_round: list[float]) -> str:
    walls = [r["wall_seconds"] for r in path.get("runs", [])]
    return (f"| {name} | {how} | {path['wall_seconds']:.1f} ({_rounds(walls, 1)}) | {path['models_per_hour']:,.0f} "
            f"| {path['images_per_second']:,.0f} | {path['gflops']:.1f} | **{speedup:.2f}x** ({_rounds(per_round, 2)}) |")


def _noise(stats: dict[str, Any]) -> str:
    return f"mean {stats['mean']:.4f}, median {stats['median']:.4f}, max {stats['max']:.4f} (n={stats['n']})"


def throughput_block(results_dir: Path, zoo: str, link: Callable[[str], str] = str) -> str:
    """The block's body from `<results_dir>/perf/zoo_throughput.json`, or one line saying that it is missing."""
    path = results_dir / REL
    if not path.is_file():
        return f"\nNo `{REL}` in the results folder: `fpbench perf zoo_throughput --results-dir {results_dir.name}` writes it.\n"
    data = json.loads(path.read_text(encoding="utf-8"))
    fig = data["figures"]
    paths, speedup, per_round = fig["paths"], fig["speedup"], fig["speedup_per_round"]
    before_how = paths["before"].get("how") or (fig.get("baseline") or {}).get("how", "the old default by overrides")
    lines = [HEADER, "|---|---|---:|---:|---:|---:|---:|"]
    for name in ("before", "workers", "after"):
        if name in paths:
            how = before_how if name == "before" else WHAT[name]
            lines.append(_row(name, paths[name], how, speedup[name], per_round[name]))
    accuracy = fig["accuracy"]
    diffs = accuracy["abs_diff_from_before"]
    machine = data.get("machine") or {}
    errors = fig.get("errors") or {}
    share = paths["after"]["gflops"] / fig["matmul_all_cores"]["gflops"]
    notes = [
        f"Zoo `{zoo}`: {fig['models']} models, {fig['nominal_images']:,} nominal training images, "
        f"{fig['usable_cpus']} usable CPU(s), `compute.cpu_threads` {fig['cpu_threads']}; medians over "
        f"{paths['after'].get('rounds', '?')} interleaved rounds, from [{REL}]({link(REL)}) "
        f"(`{data.get('command', 'fpbench perf zoo_throughput')}`, torch {machine.get('torch', '?')}).",
        f"A 2048² float32 matmul reaches {fig['matmul_job_threads']['gflops']:.1f} GFLOP/s on "
        f"{fig['matmul_job_threads']['threads']} thread(s) and {fig['matmul_all_cores']['gflops']:.1f} on "
        f"{fig['matmul_all_cores']['threads']}: `after` runs at {share:.0%} "
        "of the all-core rate over the whole build (nominal training FLOPs only: a lower bound).",
        f"Accuracy: each model's test accuracy differs from `before`'s by (absolute) {_noise(diffs['after'])} on "
        f"`after` and {_noise(diffs['workers'])} on `workers`. "
        f"The zoo's seed-to-seed noise (models that differ only in their seed): {_noise(accuracy['seed_noise'])}.",
    ]
    if errors:
        notes.append("Errors: " + "; ".join(f"{k}: {v}" for k, v in sorted(errors.items())) + ".")
    return "\n" + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
