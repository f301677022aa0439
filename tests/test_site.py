"""bench.report.site: the static leaderboard page, checked as a file and in headless Chromium.

The browser tests drive Debian's ``chromium`` without a driver: ``--dump-dom`` prints the DOM after
the page's scripts ran, and the page reads its view state (``sort``, ``dir``, filters, ``click``)
from URL parameters through the same code the controls use. They are skipped when no Chromium or
Chrome binary is on PATH (``.ci/run`` installs one).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from bench.metrics import BootstrapConfig
from bench.report import build_board, write_site
from bench.results import make_result, result_path, write_result

# (zoo, dataset, method, seeds, lift of positives' scores over negatives')
RUNS = (
    ("tiny", "cifar10", "adv_tra", (0, 1, 2), 0.5),
    ("tiny", "cifar10", "ipguard", (0, 1, 2), 0.2),
    ("tiny", "cifar10", "akh", (0,), 0.35),
    ("small", "fashion_mnist", "adv_tra", (0, 1, 2), 0.3),
    ("small", "fashion_mnist", "akh", (0, 1, 2), 0.1),
    ("small", "fashion_mnist", "uap", (0,), 0.45),
)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")



def _version(method: str) -> str:
    """The registered version of a registered method (`--check` flags a row of an older one), else "1"."""
    from bench.methods import METHODS

    return str(METHODS.get(method).version) if method in METHODS else "1"

def synthetic_result(
    zoo: str, dataset: str, method: str, seed: int, lift: float, n: int = 10
) -> dict[str, Any]:
    """A result with scores from `random.Random` (stable across Python versions)."""
    rng = random.Random(f"{zoo}-{method}-{seed}")
    per_model = []
    for i in range(2 * n):
        positive = i < n
        attack, kind = (("ftll", "prune")[i % 2], None) if positive else (None, ("SAST", "DADT")[i % 2])
        per_model.append({
            "model_id": f"m{i:03d}", "role": "positive" if positive else "negative", "attack": attack,
            "kind": kind, "group": attack or kind, "score": round(rng.random() * 0.6 + lift * positive, 4),
            "queries": 100,
        })  # fmt: skip
    return make_result(
        seed=seed,
        method={"name": method, "version": _version(method), "access": "label", "config": {}},
        config={"method": method, "zoo": zoo},
        zoo={
            "name": zoo,
            "manifest_sha256": "ab" * 32,
            "dataset": dataset,
            "split_hashes": {"owner": "o", "attacker": "a", "independent": "i", "test": "t"},
            "source_id": "src",
            "source_test_acc": 0.9,
        },  # fmt: skip
        per_model=per_model,
        timing_s={"generate": 1.0 + seed, "verify": 0.5, "total": 1.5 + seed, "fingerprint_cached": False},
        bootstrap=BootstrapConfig(n=50, seed=seed),
        git_path=None,
    )


def write_results(root: Path, runs: tuple = RUNS) -> Path:
    for zoo, dataset, method, seeds, lift in runs:
        for seed in seeds:
            result = synthetic_result(zoo, dataset, method, seed, lift)
            write_result(result, result_path(root, zoo, method, result["config_sha256"], seed))
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_results(tmp_path_factory.mktemp("results"))
    (root / "sweeps" / "adv_tra-length").mkdir(parents=True)
    (root / "sweeps" / "adv_tra-length" / "auc.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "sweeps" / "adv_tra-length" / "points.csv").write_text("method,point,trial,auc\n")
    return write_site(root)


def embedded_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="leaderboard-data">(.*?)</script>', page, re.S)
    assert match, "no embedded leaderboard data"
    return json.loads(match.group(1))


def test_page_embeds_every_row(site: Path) -> None:
    page = site.read_text(encoding="utf-8")
    frame = build_board(site.parent.parent).rows
    rows = embedded_data(page)["rows"]
    assert len(rows) == len(frame) == len(RUNS)
    assert [(r["zoo"], r["method"], r["trials"]) for r in rows] == list(
        zip(frame["zoo"], frame["method"], frame["trials"])
    )
    assert page.count('<tr data-index="') == len(frame)  # rendered without JS too
    for files in frame["result_files"]:
        for rel in files:
            assert f'href="../{rel}"' in page and (site.parent.parent / rel).is_file()
    for zoo in ("tiny", "small"):
        for name in ("roc", "scores_box", "groups_heatmap"):
            assert f'src="../plots/{zoo}/{name}.png"' in page
    assert (
        'src="../sweeps/adv_tra-length/auc.png"' in page
        and 'href="../sweeps/adv_tra-length/points.csv"' in page
    )
    assert "T1%F" in page and "not measured here" in page and "fpbench leaderboard --html" in page


def test_page_is_self_contained(site: Path) -> None:
    page = site.read_text(encoding="utf-8")
    refs = re.findall(r'<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)="([^"]*)"', page)
    assert refs and not [r for r in refs if re.match(r"[a-z]+:|//", r)]
    assert "http://" not in page and "https://" not in page
    assert "fetch(" not in page and "XMLHttpRequest" not in page and "@import" not in page


def test_page_is_byte_identical(site: Path) -> None:
    first = site.read_bytes()
    assert write_site(site.parent.parent) == site
    assert site.read_bytes() == first


def test_markup_in_data_is_escaped(tmp_path: Path) -> None:
    nasty = "x</script><script>alert(1)</script>&"
    write_results(tmp_path, (("tiny", nasty, "akh", (0,), 0.3),))
    page = write_site(tmp_path).read_text(encoding="utf-8")
    assert "<script>alert" not in page
    assert embedded_data(page)["rows"][0]["dataset"] == nasty


def test_page_shows_ranks_and_paired_comparisons(site: Path) -> None:
    page = site.read_text(encoding="utf-8")
    rows = embedded_data(page)["rows"]
    assert all(isinstance(r["rank"], int) and r["rank"] >= 1 for r in rows if r["trials"] >= 3)
    assert all(r["rank"] is None for r in rows if r["trials"] < 3)  # ranks are not tested below 3 trials
    assert {r["zoo"] for r in rows if r["rank"] == 1} == {"tiny", "small"}  # ranks are per benchmark
    assert '<th scope="col" data-key="rank"' in page and '<section id="comparisons">' in page
    assert '<p id="few-trials">Rank — on 2 row(s) with fewer than 3 trials: ranks are not tested below 3 trials.</p>' in page
    sections = re.findall(r'<section class="comparison" data-zoo="(\w+)"', page)
    assert sorted(sections) == ["small", "tiny"]
    assert page.count("<tr data-distinguishable=") == 1 + 1  # 2 rows of 3 trials per zoo: 1 pair each
    assert "<th scope=\"col\">p (Holm)</th>" in page


def test_row_below_target_is_marked_and_ranked(tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        for method, lift in (("uap", 0.5), ("akh", 0.1)):
            result = synthetic_result("tiny", "cifar10", method, seed, lift)
            if method == "uap":
                result["fingerprint"] = {
                    "generation_target": {"name": "fooling_rate", "achieved": 0.2, "floor": 0.7, "met": False}}
            write_result(result, result_path(tmp_path, "tiny", method, result["config_sha256"], seed))
    page = write_site(tmp_path).read_text(encoding="utf-8")
    rows = {r["method"]: r for r in embedded_data(page)["rows"]}
    assert rows["uap"]["rank"] == 1 and rows["uap"]["below_target"] and rows["akh"]["rank"] >= 1
    assert 'class="below-target" title="generation missed its target in 3 of 3 trial(s)' in page
    assert '<li id="target-1">⚠1 `uap` (zoo `tiny`' in page and "fooling_rate 0.200 &lt; floor 0.700" in page
    assert '<td data-key="rank" class="number">—</td>' not in page and "Ranked, and marked" in page


def test_empty_results_dir(tmp_path: Path) -> None:
    page = write_site(tmp_path).read_text(encoding="utf-8")
    assert "No result files found." in page and embedded_data(page)["rows"] == []


# --- in a real browser -------------------------------------------------------------------------


class DomRows(HTMLParser):
    """Row indices of `#leaderboard tbody`, the `#row-count` text and each header's aria-sort."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []
        self.aria_sort: dict[str, str] = {}
        self.row_count = ""
        self._in_table = self._in_body = self._in_count = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == "leaderboard":
            self._in_table = True
        elif self._in_table and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append(int(a["data-index"] or -1))
        elif self._in_table and tag == "th" and "data-key" in a:
            self.aria_sort[a["data-key"] or ""] = a.get("aria-sort") or ""
        elif a.get("id") == "row-count":
            self._in_count = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = self._in_body = False
        elif tag == "output":
            self._in_count = False

    def handle_data(self, data: str) -> None:
        if self._in_count:
            self.row_count += data


# Each view is one Chromium start (~2-3 s); they are loaded once, a few at a time, and shared.
VIEWS = (
    "",
    "?sort=auc&dir=asc",
    "?sort=auc&dir=desc",
    "?click=auc",
    "?click=auc,auc",
    "?method=akh",
    "#zoo=small&sort=auc&dir=desc",
    "?q=small&click=method",
)


def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.skip(f"no headless browser: none of {', '.join(BROWSERS)} on PATH (apt-get install chromium)")
    return found


def dump_dom(binary: str, url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran (virtual time lets them finish without waiting)."""
    command = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
               "--virtual-time-budget=2000", "--dump-dom", url]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "</html>" in done.stdout, (
        f"chromium failed on {url} ({done.returncode}): {done.stderr[-2000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def views(site: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, DomRows]:
    """Every entry of VIEWS loaded as `file://.../index.html<view>`, parsed."""
    binary = browser()
    profiles = tmp_path_factory.mktemp("chromium")
    with ThreadPoolExecutor(max_workers=3) as pool:
        pages = pool.map(
            lambda iv: dump_dom(binary, site.as_uri() + iv[1], profiles / str(iv[0])), enumerate(VIEWS)
        )
        doms = {}
        for view, page in zip(VIEWS, pages):
            doms[view] = DomRows()
            doms[view].feed(page)
    return doms


@pytest.fixture(scope="module")
def rows(site: Path) -> list[dict[str, Any]]:
    return embedded_data(site.read_text(encoding="utf-8"))["rows"]


def shown_count(dom: DomRows) -> int:
    return int(re.match(r"(\d+) of \d+", dom.row_count.strip()).group(1))


def test_browser_lists_every_row(views: dict[str, DomRows], rows: list[dict[str, Any]]) -> None:
    dom = views[""]
    assert dom.rows == list(range(len(rows))) and shown_count(dom) == len(rows) == len(RUNS)
    assert set(dom.aria_sort.values()) == {"none"}


def test_browser_sorts_by_auc(views: dict[str, DomRows], rows: list[dict[str, Any]]) -> None:
    ascending, descending = views["?sort=auc&dir=asc"], views["?sort=auc&dir=desc"]
    aucs = [row["auc"] for row in rows]
    assert [aucs[i] for i in ascending.rows] == sorted(aucs)
    assert descending.rows == ascending.rows[::-1]
    assert ascending.rows != list(range(len(aucs)))  # the leaderboard order (by zoo first) changed
    assert (ascending.aria_sort["auc"], descending.aria_sort["auc"]) == ("ascending", "descending")


def test_browser_header_clicks_toggle(views: dict[str, DomRows], rows: list[dict[str, Any]]) -> None:
    once, twice = views["?click=auc"], views["?click=auc,auc"]
    assert [rows[i]["auc"] for i in once.rows] == sorted((r["auc"] for r in rows), reverse=True)
    assert once.rows == views["?sort=auc&dir=desc"].rows and once.aria_sort["auc"] == "descending"
    assert twice.rows == once.rows[::-1] and twice.aria_sort["auc"] == "ascending"


def test_browser_filters(views: dict[str, DomRows], rows: list[dict[str, Any]]) -> None:
    akh = views["?method=akh"]
    assert {rows[i]["method"] for i in akh.rows} == {"akh"} and len(akh.rows) == shown_count(akh) == 2
    small = views["#zoo=small&sort=auc&dir=desc"]  # the hash works like the query
    assert [rows[i]["zoo"] for i in small.rows] == ["small"] * 3 and shown_count(small) == 3
    assert [rows[i]["auc"] for i in small.rows] == sorted((rows[i]["auc"] for i in small.rows), reverse=True)
    text = views["?q=small&click=method"]  # free text, then a click on a text column (A to Z)
    assert [(rows[i]["zoo"], rows[i]["method"]) for i in text.rows] == [
        ("small", m) for m in ("adv_tra", "akh", "uap")
    ]
    assert shown_count(text) == 3 and text.aria_sort["method"] == "ascending"
