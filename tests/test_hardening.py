"""Hardening (issue #16, items 1, 2, 11): names cannot escape their folders, recipe names are
escaped in leaderboard.md, and stale temporary files of a killed build are cleaned."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench.cli import main
from bench.config import ConfigError, load_recipe
from bench.io import STALE_TEMP_S, inside
from bench.report import write_leaderboard
from bench.results import result_path, write_result
from bench.zoo.build import build_zoo
from bench.zoo.jobs import zoo_root
from bench.zoo.store import ZooStore
from tests.conftest import SMOKE, smoke_overrides
from tests.test_report import synthetic_result


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("command", ["zoo", "run"])
@pytest.mark.parametrize("name", ["../../escaped", "ABSOLUTE", "a/b", ".hidden"])
def test_bad_zoo_name_exits_2_and_writes_nothing(tmp_path, capsys, command, name):
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    name = str(tmp_path / "abs_zoo") if name == "ABSOLUTE" else name
    code = main([command, str(SMOKE), *smoke_overrides(inner), f"zoo.name={name}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "zoo.name" in err and name in err and "letters, digits" in err
    assert _files(tmp_path) == [] and sorted(tmp_path.iterdir()) == [tmp_path / "a"]


def test_bad_sweep_name_exits_2(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: ../../escaped\nrecipe: {SMOKE}\nparameters: {{seed: [0, 1]}}\n")
    assert main(["sweep", str(sweep), *smoke_overrides(tmp_path / "out")]) == 2
    assert "Sweep name '../../escaped'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_recipe_accepts_plain_names(tmp_path):
    cfg = load_recipe(SMOKE, smoke_overrides(tmp_path, "zoo.name=my-zoo_v1.2"))
    assert zoo_root(cfg) == tmp_path / "zoo" / "my-zoo_v1.2"
    with pytest.raises(ConfigError, match="zoo.name='..'"):
        load_recipe(SMOKE, smoke_overrides(tmp_path, "zoo.name=.."))


@pytest.mark.parametrize("parts", [("..",), ("../x",), ("/etc",), ("x", "..", "..", "y"), (".",)])
def test_inside_refuses_escapes(tmp_path, parts):
    with pytest.raises(ValueError, match="escapes"):
        inside(tmp_path, *parts)


def test_path_builders_refuse_names_that_bypassed_the_recipe(tmp_path):
    assert inside(tmp_path, "x", "y.json") == tmp_path / "x" / "y.json"
    with pytest.raises(ValueError, match="escapes"):
        result_path(tmp_path, "../../escaped", "akh", "ab" * 32, 0)
    with pytest.raises(ValueError, match="escapes"):
        result_path(tmp_path, "/abs", "akh", "ab" * 32, 0)
    cfg = OmegaConf.create({"paths": {"zoo_dir": str(tmp_path)}, "zoo": {"name": "../escaped"}})
    with pytest.raises(ValueError, match="escapes"):
        zoo_root(cfg)


HOSTILE = "ev|l_*x*_<b>[l](http://x)`\nnext"


def test_leaderboard_md_escapes_recipe_names(tmp_path):
    """A hostile zoo name (from a hand-made result file) is escaped in every cell and heading, and
    plots of a zoo whose name would leave the results tree are skipped, not written outside."""
    for method, seed in [(m, s) for m in ("akh", "ipguard") for s in range(3)]:  # 3 trials: a comparisons heading
        result = synthetic_result(method, seed, 0.3)
        result["zoo"]["name"] = HOSTILE
        result["zoo"]["dataset"] = "data_*set*_"
        write_result(result, result_path(tmp_path, "tiny", method, result["config_sha256"], seed))
    write_leaderboard(tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    escaped = r"ev\|l\_\*x\*\_\<b\>\[l\](http://x)\` next"
    rows = [line for line in text.splitlines() if line.startswith("| ev")]
    assert len(rows) == 2 and all(line.startswith(f"| {escaped} | data\\_\\*set\\*\\_ |") for line in rows)
    head_cells = len(next(line for line in text.splitlines() if line.startswith("| zoo")).split(" | "))
    assert all(len(line.replace("\\|", "").split(" | ")) == head_cells for line in rows)
    outside_code = [line for line in text.splitlines() if not line.startswith("### ")]
    assert not any("<b>" in line or "[l](http" in line for line in outside_code) and "\nnext" not in text
    assert "### ``ev\\|l_*x*_<b>[l](http://x)` next`` (data\\_\\*set\\*\\_), bench `" in text


def test_plots_of_an_escaping_zoo_name_are_skipped(tmp_path, caplog):
    from bench.report import write_plots

    result = synthetic_result("akh", 0, 0.3)
    result["zoo"]["name"] = "../../outside"
    write_result(result, result_path(tmp_path / "res", "tiny", "akh", result["config_sha256"], 0))
    with caplog.at_level(logging.WARNING):
        assert write_plots(tmp_path / "res") == []
    assert "outside" in caplog.text and not (tmp_path / "outside").exists()


def test_stale_temp_files_are_removed_by_the_next_build(smoke_cfg, smoke_zoo, tmp_path, caplog):
    cfg = load_recipe(SMOKE, smoke_overrides(tmp_path))
    shutil.copytree(smoke_zoo.store.root, tmp_path / "zoo" / smoke_cfg.zoo.name)
    store = ZooStore(tmp_path / "zoo" / smoke_cfg.zoo.name)
    model_id = next(iter(store.records()))
    old = time.time() - STALE_TEMP_S - 3600
    stale = [store.models_dir / f".{model_id}.safetensors.0123456789ab.tmp", store.root / ".manifest.jsonl.aaaaaaaaaaaa.tmp"]
    fresh = store.root / ".recipe.yaml.bbbbbbbbbbbb.tmp"  # zoo import writes it without the lock: kept
    killed = store.models_dir / f".{model_id}.json.cccccccccccc.tmp"  # fresh, but no writer is live under the lock
    other = [store.models_dir / "notes.tmp", store.root / ".keep.tmp"]  # not atomic-write temps: kept
    for path in [*stale, fresh, killed, *other]:
        path.write_bytes(b"partial")
    for path in [*stale, *other]:
        os.utime(path, (old, old))
    with caplog.at_level(logging.INFO, logger="bench.zoo.store"):
        report = build_zoo(cfg, progress=False)
    assert report.built == [] and not any(p.exists() for p in [*stale, killed])
    assert fresh.exists() and all(p.exists() for p in other)
    assert all(str(p) in caplog.text for p in stale)
