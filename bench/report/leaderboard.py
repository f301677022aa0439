"""The leaderboard: one row per (zoo, method, config), built from result files only.

Aggregation over trials (seeds): means and sample standard deviations (ddof=1) across trials. The
per-result bootstrap CI is shown only when a row has exactly one trial: averaging the lows and
highs of several trials' intervals is not a confidence interval of anything, so with several
trials the spread is the std across trials. Output is byte-identical for the same files: rows and
columns in a fixed order, fixed float formats, no timestamps.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from bench.io import atomic_write_text
from bench.metrics import format_fpr
from bench.results import ResultError, check_result, iter_results, list_result_files, read_result

COLUMNS = [
    "zoo", "dataset", "method", "config", "trials", "auc", "auc_std", "auc_ci", "t1f", "t1f_std",
    "t10f", "t10f_std", "n_pos", "n_neg", "queries", "gen_s", "verify_s", "paper", "result_files",
]  # fmt: skip

# AUC/T1%F/T10%F reported in the ADV-TRA paper's Table 2 (reported, not measured here).
PAPER_TABLE2: dict[tuple[str, str], str] = {
    ("adv_tra", "cifar10"): "1.00/1.00/1.00",
    ("uap", "cifar10"): "0.91/0.76/0.78",
    ("cae", "cifar10"): "0.80/0.48/0.64",
    ("ipguard", "cifar10"): "0.77/0.30/0.46",
    ("adv_tra", "cifar100"): "1.00/1.00/1.00",
    ("adv_tra", "imagenet"): "0.96/0.88/0.90",
}
T1F, T10F = format_fpr(0.01), format_fpr(0.1)


def paper_value(method: str, dataset: str) -> str:
    """The paper's "AUC/T1%F/T10%F" for ``method`` on ``dataset`` ("" when the paper has none)."""
    return PAPER_TABLE2.get((method.lower(), re.sub(r"[^a-z0-9]", "", dataset.lower())), "")


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _std(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2:
        return math.nan
    mean = sum(finite) / len(finite)
    return math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


def _tpr(result: dict[str, Any], key: str) -> float:
    value = result["metrics"]["tpr_at_fpr"].get(key)
    return math.nan if value is None else float(value)


def _auc_ci(results: list[dict[str, Any]]) -> str:
    ci = results[0]["metrics"]["ci"]
    if len(results) != 1 or not ci:
        return ""
    low, high = ci["auc"]
    return f"{low:.3f}–{high:.3f}"


def _row(key: tuple[str, str, str], group: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    results = [r for _, r in group]
    first = results[0]
    aucs = [float(r["metrics"]["auc"]) for r in results]
    t1 = [_tpr(r, T1F) for r in results]
    t10 = [_tpr(r, T10F) for r in results]
    return {
        "zoo": key[0],
        "dataset": first["zoo"]["dataset"],
        "method": key[1],
        "config": key[2][:8],
        "trials": len(results),
        "auc": _mean(aucs),
        "auc_std": _std(aucs),
        "auc_ci": _auc_ci(results),
        "t1f": _mean(t1),
        "t1f_std": _std(t1),
        "t10f": _mean(t10),
        "t10f_std": _std(t10),
        # The smallest count over trials: the figure rests on at least this many suspects.
        "n_pos": min(int(r["metrics"]["n_positive"]) for r in results),
        "n_neg": min(int(r["metrics"]["n_negative"]) for r in results),
        "queries": _mean([float(r["queries_per_suspect"]) for r in results]),
        "gen_s": _mean([float(r["timing_s"]["generate"]) for r in results]),
        "verify_s": _mean([float(r["timing_s"]["verify"]) for r in results]),
        "paper": paper_value(key[1], first["zoo"]["dataset"]),
        "result_files": [rel for rel, _ in group],
    }


def build_leaderboard(results_dir: str | Path) -> pd.DataFrame:
    """Aggregate every result file under ``results_dir/runs`` into the leaderboard table.

    Args:
        results_dir: Root of the results tree.

    Returns:
        One row per (zoo, method, config_sha256) with the columns in :data:`COLUMNS`;
        ``result_files`` holds POSIX paths relative to ``results_dir``. Sorted by zoo, AUC
        descending, method, config. ``*_std`` is NaN with one trial.

    Raises:
        ResultError: If a result file does not validate.
    """
    root = Path(results_dir)
    groups: dict[tuple[str, str, str], list[tuple[str, dict[str, Any]]]] = {}
    for path, result in iter_results(root):
        key = (result["zoo"]["name"], result["method"]["name"], result["config_sha256"])
        groups.setdefault(key, []).append((path.relative_to(root).as_posix(), result))
    rows = [_row(key, groups[key]) for key in sorted(groups)]
    rows.sort(key=lambda r: (r["zoo"], -r["auc"], r["method"], r["config"], r["result_files"]))
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt(value: float, decimals: int = 3) -> str:
    return "" if math.isnan(value) else f"{value:.{decimals}f}"


def _with_spread(mean: float, std: float, ci: str = "") -> str:
    if math.isnan(mean):
        return "n/a"
    text = _fmt(mean)
    if not math.isnan(std):
        return f"{text} ± {_fmt(std)}"
    return f"{text} [{ci}]" if ci else text


_HEADER = """\
# fpbench leaderboard

Generated by `fpbench leaderboard` from the result files under `runs/` only; do not edit by hand.

- **AUC**: area under the ROC curve of suspect scores, positives (derived from the source) vs
  negatives (independent models).
- **T1%F / T10%F**: the largest true-positive rate among ROC points with false-positive rate at most
  1% / 10%, without interpolation. With fewer negatives than 1/FPR (n− < 100 for T1%F) the figure is
  the TPR at zero false positives: read it together with n−.
- **±** is the standard deviation across trials (seeds); with a single trial the bracket is that
  result's percentile-bootstrap confidence interval (95% unless the result file says otherwise).
- **queries**: queries per suspect; **gen s / verify s**: fingerprint generation and verification
  time in seconds (mean over trials).
- **paper**: AUC/T1%F/T10%F *reported* in the ADV-TRA paper (Table 2) for the same method and
  dataset; not measured here.
"""


def leaderboard_markdown(frame: pd.DataFrame) -> str:
    """Render a :func:`build_leaderboard` frame as the ``leaderboard.md`` text."""
    if frame.empty:
        return _HEADER + "\nNo result files found.\n"
    head = ["zoo", "dataset", "method", "config", "trials", "AUC", "T1%F", "T10%F", "n+", "n−",
            "queries", "gen s", "verify s", "paper", "runs"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 5 + ["---:"] * 8 + ["---"] * 2) + "|"]
    for row in frame.to_dict("records"):
        runs = " ".join(f"[{Path(p).stem}]({p})" for p in row["result_files"])
        cells = [
            row["zoo"], row["dataset"], row["method"], f"`{row['config']}`", str(row["trials"]),
            _with_spread(row["auc"], row["auc_std"], row["auc_ci"]),
            _with_spread(row["t1f"], row["t1f_std"]), _with_spread(row["t10f"], row["t10f_std"]),
            str(row["n_pos"]), str(row["n_neg"]), _fmt(row["queries"], 0),
            _fmt(row["gen_s"], 1), _fmt(row["verify_s"], 1), row["paper"], runs,
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return _HEADER + "\n" + "\n".join(lines) + "\n"


def leaderboard_csv(frame: pd.DataFrame) -> str:
    """Render a :func:`build_leaderboard` frame as CSV (``result_files`` joined with ``;``)."""
    flat = frame.copy()
    flat["result_files"] = [";".join(files) for files in flat["result_files"]]
    return flat.to_csv(index=False, float_format="%.6f", lineterminator="\n")


def check_results(results_dir: str | Path) -> list[str]:
    """Validate every result file and re-check its metrics against its per-model scores.

    Args:
        results_dir: Root of the results tree.

    Returns:
        ``"path: message"`` lines, one per problem; empty when every file is sound.
    """
    problems: list[str] = []
    for path in list_result_files(results_dir):
        try:
            result = read_result(path)
        except ResultError as err:
            # The message already starts with the path.
            problems.append(str(err))
            continue
        except OSError as err:
            problems.append(f"{path}: cannot be read ({err}).")
            continue
        problems.extend(f"{path}: {message}" for message in check_result(result))
    return problems


def write_leaderboard(results_dir: str | Path) -> tuple[Path, Path]:
    """Write ``leaderboard.md`` and ``leaderboard.csv`` into ``results_dir`` (atomically).

    Args:
        results_dir: Root of the results tree.

    Returns:
        ``(markdown_path, csv_path)``.

    Raises:
        ResultError: If a result file does not validate.
    """
    root = Path(results_dir)
    frame = build_leaderboard(root)
    md_path, csv_path = root / "leaderboard.md", root / "leaderboard.csv"
    atomic_write_text(md_path, leaderboard_markdown(frame))
    atomic_write_text(csv_path, leaderboard_csv(frame))
    return md_path, csv_path
