"""Synthetic benchmarks with a known truth, to measure how often a paired comparison separates two methods.

Model (per method m; the two methods' scores are independent given the suspects' shared effects):

- positive i of trial t in attack config k: ``mu_m + shared_k + cluster_{k,m} + pos_{t,i,m}``; positives
  are new models in every trial, the attack configs (clusters) are the same in every trial, and most of
  a config's effect is the same for every method (``shared_k``: extraction is hard for all of them);
- negative j: ``common_j + neg_{j,m} + noise_{t,j,m}``; the same negatives in every trial, so
  ``common_j`` (both methods) and ``neg_{j,m}`` (this method) are shared by every trial;
- ``mu_m`` makes the population AUC P(s+ > s-) ``base_auc`` for method B and ``base_auc + margin``
  for A; optional ties: scores below ``zero_below`` become 0 (coarse scores such as detection rates).

The defaults approximate the variance components of the published fmnist_paper results on the
normal-score scale (``python -m bench.stats_sim components``, :func:`variance_components`).
``python -m bench.stats_sim simulate --runs 200`` prints the markdown block of ``docs/statistics.md``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from bench.stats.paired import TrialScores, _align, _wins, paired_difference

Compare = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class SimDesign:
    """The benchmark's shape and variance components (defaults: the published fmnist_paper benchmark).

    Defaults from ``python -m bench.stats_sim components`` (medians over its rows, normal-score scale):
    cluster_shared 0.88 split by the rows' cluster correlation 0.92 into sqrt(0.88 * 0.92) and
    sqrt(0.88 * 0.08); neg_persistent 0.19 split by the negatives' correlation 0.36 into sqrt(0.19 * 0.36)
    and sqrt(0.19 * 0.64); noise sqrt(0.13); positives within a cluster sqrt(0.06).
    """

    n_trials: int = 5
    cluster_sizes: tuple[int, ...] = (5,) * 10 + (3, 3)  # 56 positives: 10 attack configs x 5 seeds, 2 x 3
    n_negative: int = 50  # the same 50 negatives in every trial
    base_auc: float = 0.85  # population AUC of method B (published rows: 0.70-0.97)
    shared_cluster_sd: float = 0.9  # per attack config, the same for both methods and every trial
    cluster_sd: float = 0.27  # per attack config and method, the same in every trial
    pos_sd: float = 0.25  # per positive and method (a new model in every trial)
    common_sd: float = 0.26  # per negative, the same for both methods and every trial
    neg_sd: float = 0.35  # per negative and method, the same in every trial
    noise_sd: float = 0.36  # per negative, method and trial
    zero_below: float | None = None  # scores below it become 0.0 (ties at 0); None: no ties


def _location(design: SimDesign, auc: float) -> float:
    """mu such that P(s+ > s-) = auc for one positive and one negative drawn independently."""
    if not 0 < auc < 1:
        raise ValueError(f"population AUC {auc} must be in (0, 1); lower base_auc or margin.")
    var_pos = design.shared_cluster_sd**2 + design.cluster_sd**2 + design.pos_sd**2
    var_neg = design.common_sd**2 + design.neg_sd**2 + design.noise_sd**2
    return math.sqrt(var_pos + var_neg) * float(norm.ppf(auc))


def simulate_benchmark(rng: np.random.Generator, design: SimDesign = SimDesign(),
                       margin: float = 0.0) -> tuple[list[TrialScores], list[TrialScores]]:
    """One synthetic benchmark: methods A and B scored on the same suspects in ``design.n_trials`` trials.

    Args:
        rng: Source of randomness.
        design: Shape and variance components.
        margin: Population AUC(A) - AUC(B) (0: the two methods are identical in distribution).

    Returns:
        ``(a, b)``: one :class:`TrialScores` per trial each; positives clustered by attack config
        (``cfg<k>``), each negative its own cluster.
    """
    sizes, n_trials, n_neg = np.asarray(design.cluster_sizes), design.n_trials, design.n_negative
    n_pos = int(sizes.sum())
    cluster_of = np.repeat(np.arange(sizes.size), sizes)
    neg_common = rng.normal(0, design.common_sd, n_neg)
    shared = rng.normal(0, design.shared_cluster_sd, sizes.size)[cluster_of]
    ids = [f"neg{j}" for j in range(n_neg)]
    roles = [1] * n_pos + [0] * n_neg
    out: list[list[TrialScores]] = []
    for auc in (design.base_auc + margin, design.base_auc):
        mu = _location(design, auc)
        cluster = rng.normal(0, design.cluster_sd, sizes.size)[cluster_of]
        pos = mu + shared + cluster + rng.normal(0, design.pos_sd, (n_trials, n_pos))
        neg = neg_common + rng.normal(0, design.neg_sd, n_neg) + rng.normal(0, design.noise_sd, (n_trials, n_neg))
        scores = np.c_[pos, neg]
        if design.zero_below is not None:
            scores = np.where(scores < design.zero_below, 0.0, scores)
        out.append([TrialScores([f"t{t}pos{i}" for i in range(n_pos)] + ids, roles, scores[t],
                                [f"cfg{k}" for k in cluster_of] + ids) for t in range(n_trials)])  # fmt: skip
    return out[0], out[1]


def independent_trials_bootstrap(a: Sequence[TrialScores], b: Sequence[TrialScores], *, n_boot: int = 2000,
                                 confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The strawman (the board's bootstrap before ``bench.stats``): trials drawn with replacement, then in
    every drawn trial positives and negatives drawn one by one, afresh for each trial, ignoring clusters
    and that the negatives are the same models in every trial. Same output keys as
    :func:`bench.stats.paired_difference` (AUC only). Kept to measure what the design changes.
    """
    trials, _, _ = _align(a, b)
    diffs = [_wins(t.a_pos, t.a_neg) - _wins(t.b_pos, t.b_neg) for t in trials]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diffs), size=(n_boot, len(diffs)))
    values = np.zeros(picks.shape)
    for index, diff in enumerate(diffs):
        where = picks == index
        draws = int(where.sum())
        counts_pos = rng.multinomial(diff.shape[0], np.full(diff.shape[0], 1 / diff.shape[0]), size=draws)
        counts_neg = rng.multinomial(diff.shape[1], np.full(diff.shape[1], 1 / diff.shape[1]), size=draws)
        values[where] = ((counts_pos @ diff) * counts_neg).sum(axis=1) / diff.size
    boot = values.mean(axis=1)
    low, high = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    p_value = min(1.0, max(1.0 / n_boot, 2 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0)))))
    return {"statistic": "auc", "diff": float(np.mean([d.mean() for d in diffs])), "low": float(low),
            "high": float(high), "p_value": p_value, "n_boot": n_boot}


def separation_rate(margin: float = 0.0, *, runs: int = 200, design: SimDesign = SimDesign(),
                    compare: Compare = paired_difference, n_boot: int = 400, alpha: float = 0.05,
                    seed: int = 0) -> dict[str, Any]:
    """Share of ``runs`` simulated benchmarks in which ``compare`` separates A from B at level ``alpha``.

    At ``margin = 0`` this is the false-separation rate (should be <= alpha); at ``margin > 0`` it is the
    power (only separations in the right direction, ``diff > 0``, count).

    Returns:
        ``{"runs", "separated", "rate", "mean_diff", "margin"}``.
    """
    rng = np.random.default_rng(seed)
    separated, diffs = 0, []
    for run in range(runs):
        a, b = simulate_benchmark(rng, design, margin)
        result = compare(a, b, n_boot=n_boot, confidence=1 - alpha, seed=run)
        separated += result["p_value"] < alpha and (margin == 0 or result["diff"] > 0)
        diffs.append(result["diff"])
    return {"runs": runs, "separated": int(separated), "rate": separated / runs,
            "mean_diff": float(np.mean(diffs)), "margin": margin}


def report(runs: int, n_boot: int, seed: int) -> str:
    """The markdown block of docs/statistics.md: false-separation rates and power at the published size."""
    plain, ties = SimDesign(), SimDesign(zero_below=0.0)
    rows = [("identical methods", "design-aware", plain, 0.0, paired_difference),
            ("identical methods", "independent per trial (old board)", plain, 0.0, independent_trials_bootstrap),
            ("identical methods, ties at 0", "design-aware", ties, 0.0, paired_difference),
            ("AUC(A) = AUC(B) + 0.02", "design-aware", plain, 0.02, paired_difference),
            ("AUC(A) = AUC(B) + 0.05", "design-aware", plain, 0.05, paired_difference),
            ("AUC(A) = AUC(B) + 0.10", "design-aware", plain, 0.10, paired_difference)]
    lines = ["| truth | bootstrap | separated at 5 % | rate | mean ΔAUC |", "|---|---|---|---|---|"]
    for truth, name, design, margin, compare in rows:
        r = separation_rate(margin, runs=runs, design=design, compare=compare, n_boot=n_boot, seed=seed)
        lines.append(f"| {truth} | {name} | {r['separated']} / {r['runs']} | {r['rate']:.3f} | {r['mean_diff']:+.4f} |")
    params = ", ".join(f"{k}={v}" for k, v in asdict(plain).items() if k != "cluster_sizes")
    lines += ["", f"Design: {sum(plain.cluster_sizes)} positives in {len(plain.cluster_sizes)} clusters "
              f"{list(plain.cluster_sizes)}, {params}; n_boot={n_boot}, seed={seed}."]  # fmt: skip
    return "\n".join(lines)


def _normal_scores(scores: Sequence[float]) -> np.ndarray:
    """Scores mapped to standard-normal quantiles of their ranks (ties share the mean rank)."""
    ranked = rankdata(np.asarray(scores, dtype=np.float64))
    return norm.ppf((ranked - 0.5) / ranked.size)


def _effects(trials: Sequence[TrialScores]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normal scores of one method: (trials x shared negatives, trials x clusters of means, within-cluster var)."""
    zs = [dict(zip(t.model_ids, _normal_scores(t.scores))) for t in trials]
    negatives = sorted(set.intersection(*({m for m, r in zip(t.model_ids, t.roles) if r == 0} for t in trials)))
    labels = [{t.unit(i)[1]: [] for i in range(len(t.roles)) if t.roles[i] == 1} for t in trials]
    for t, z, by_label in zip(trials, zs, labels):
        for i, model in enumerate(t.model_ids):
            if t.roles[i] == 1:
                by_label[t.unit(i)[1]].append(z[model])
    shared = sorted(set.intersection(*(set(by) for by in labels)))
    within = np.mean([np.var(by[c], ddof=1) for by in labels for c in shared if len(by[c]) > 1] or [0.0])
    return (np.array([[z[m] for m in negatives] for z in zs]),
            np.array([[np.mean(by[c]) for c in shared] for by in labels]), float(within))  # fmt: skip


def variance_components(trials: Sequence[TrialScores]) -> dict[str, float]:
    """One method's variance components on the normal-score scale (ranks within each trial).

    Args:
        trials: The method's trials (at least 2), negatives shared by trials, positives clustered.

    Returns:
        ``{"neg_persistent", "neg_per_trial", "cluster_shared", "pos_within"}``: the variance of a
        negative's effect kept in every trial and of its trial-to-trial change, of a cluster's effect
        kept in every trial, and of positives within a cluster and trial (moment estimates, >= 0).
    """
    if len(trials) < 2:
        raise ValueError("variance_components needs at least 2 trials to tell persistent from per-trial effects.")
    neg, clusters, within = _effects(trials)
    n_trials = len(trials)
    per_trial = float(neg.var(axis=0, ddof=1).mean())
    cluster_noise = float(clusters.var(axis=0, ddof=1).mean())
    return {"neg_persistent": max(0.0, float(neg.mean(axis=0).var(ddof=1)) - per_trial / n_trials),
            "neg_per_trial": per_trial, "pos_within": within,
            "cluster_shared": max(0.0, float(clusters.mean(axis=0).var(ddof=1)) - cluster_noise / n_trials)}


def shared_between(a: Sequence[TrialScores], b: Sequence[TrialScores]) -> dict[str, float]:
    """Correlation between two methods of the negatives' and the clusters' trial-mean normal scores."""
    (neg_a, cl_a, _), (neg_b, cl_b, _) = _effects(a), _effects(b)
    return {"negatives": float(np.corrcoef(neg_a.mean(axis=0), neg_b.mean(axis=0))[0, 1]),
            "clusters": float(np.corrcoef(cl_a.mean(axis=0), cl_b.mean(axis=0))[0, 1])}


def components_report(rows: Mapping[str, Sequence[TrialScores]]) -> str:
    """Markdown: each row's variance components, the medians and the cross-method shared fractions."""
    comps = {name: variance_components(trials) for name, trials in rows.items()}
    keys = ["neg_persistent", "neg_per_trial", "cluster_shared", "pos_within"]
    lines = ["| row | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(f"{c[k]:.2f}" for k in keys) + " |" for name, c in comps.items()]
    median = {k: float(np.median([c[k] for c in comps.values()])) for k in keys}
    lines.append("| **median** | " + " | ".join(f"{median[k]:.2f}" for k in keys) + " |")
    names = list(rows)
    pairs = [shared_between(rows[x], rows[y]) for i, x in enumerate(names) for y in names[i + 1:]]
    if pairs:
        rho = {k: float(np.median([p[k] for p in pairs])) for k in ("negatives", "clusters")}
        lines += ["", f"Median correlation between rows: negatives {rho['negatives']:.2f}, clusters "
                  f"{rho['clusters']:.2f} ({len(pairs)} pairs)."]  # fmt: skip
    return "\n".join(lines)


def _published_rows(results_dir: str, zoo: str) -> dict[str, list[TrialScores]]:
    """Per method name of ``zoo`` (first config by path), its trials with positives clustered by attack."""
    rows: dict[str, dict[int, TrialScores]] = {}
    for path in sorted((Path(results_dir) / "runs").rglob("*.json")):  # plain JSON: this module stays torch-free
        result = json.loads(path.read_text(encoding="utf-8"))
        if result["zoo"]["name"] != zoo or result["seed"] in rows.get(result["method"]["name"], {}):
            continue
        per_model = result["per_model"]
        rows.setdefault(result["method"]["name"], {})[result["seed"]] = TrialScores(
            [m["model_id"] for m in per_model], [int(m["role"] == "positive") for m in per_model],
            [float(m["score"]) for m in per_model],
            [str(m.get("attack")) if m["role"] == "positive" else m["model_id"] for m in per_model])  # fmt: skip
    return {name: [t for _, t in sorted(trials.items())] for name, trials in sorted(rows.items()) if len(trials) > 1}


KINDS = ("SAST", "SADT", "DAST", "DADT")


def _by_kind(a: Sequence[TrialScores], b: Sequence[TrialScores], **kwargs: Any) -> dict[str, Any]:
    """``paired_difference`` with the simulated negatives clustered into 4 kinds (13/13/12/12, as published)."""
    def relabel(trials: Sequence[TrialScores]) -> list[TrialScores]:
        kind = {f"neg{j}": KINDS[min(j // 13, 3)] for j in range(1000)}
        return [TrialScores(t.model_ids, t.roles, t.scores, [kind.get(c, c) for c in t.clusters]) for t in trials]
    return paired_difference(relabel(a), relabel(b), **kwargs)


def clusters_report(runs: int, n_boot: int, seed: int) -> str:
    """False separation and power with each negative its own cluster (the board) vs negatives clustered by kind."""
    lines = ["| negatives resampled | identical methods separated | ΔAUC 0.05 separated |", "|---|---:|---:|"]
    for name, compare in (("each its own cluster (the board)", paired_difference), ("by kind (4 clusters)", _by_kind)):
        rates = [separation_rate(m, runs=runs, compare=compare, n_boot=n_boot, seed=seed)["rate"] for m in (0.0, 0.05)]
        lines.append(f"| {name} | {rates[0]:.3f} | {rates[1]:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.stats_sim simulate|components ...``: print a generated markdown block."""
    parser = argparse.ArgumentParser(prog="python -m bench.stats_sim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    simulate = sub.add_parser("simulate", help=report.__doc__)
    simulate.add_argument("--runs", type=int, default=200, help="simulated benchmarks per row (default 200)")
    simulate.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates per comparison")
    simulate.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    clusters = sub.add_parser("clusters", help=clusters_report.__doc__)
    clusters.add_argument("--runs", type=int, default=200, help="simulated benchmarks per cell (default 200)")
    clusters.add_argument("--n-boot", type=int, default=400, help="bootstrap replicates per comparison")
    clusters.add_argument("--seed", type=int, default=1, help="seed of the simulation")
    components = sub.add_parser("components", help=components_report.__doc__)
    components.add_argument("--results-dir", default="results", help="results tree holding runs/ (default results)")
    components.add_argument("--zoo", default="fmnist_paper", help="zoo name (default fmnist_paper)")
    args = parser.parse_args(argv)
    if args.command == "simulate":
        if args.runs < 1 or args.n_boot < 1:
            parser.error(f"--runs {args.runs} and --n-boot {args.n_boot} must be >= 1.")
        command = f"simulate --runs {args.runs} --n-boot {args.n_boot} --seed {args.seed}"
        block = report(args.runs, args.n_boot, args.seed)
    elif args.command == "clusters":
        command = f"clusters --runs {args.runs} --n-boot {args.n_boot} --seed {args.seed}"
        block = clusters_report(args.runs, args.n_boot, args.seed)
    else:
        rows = _published_rows(args.results_dir, args.zoo)
        if not rows:
            parser.error(f"no method of zoo {args.zoo!r} has 2 or more trials under {args.results_dir}/runs.")
        command, block = f"components --results-dir {args.results_dir} --zoo {args.zoo}", components_report(rows)
    print(f"<!-- generated: python -m bench.stats_sim {command} -->\n{block}\n<!-- end generated -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
