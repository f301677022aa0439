"""Issue #24 item 9, the smaller mends: temp files of a killed zoo writer go at the next build, the zoo
manifest is read bounded, a plot path from data stays inside `plots/`, and the help and messages say
what fpbench does now. (The Ctrl-C entry is in tests/test_interrupt.py, the `wandb sync` hint in
tests/test_tracking.py.)"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.io import STALE_TEMP_S, temp_target
from bench.report.site_sections import plots
from bench.zoo.store import ZooError, ZooStore
from datamodules.base import SplitSizes, split_counts
from tests.conftest import SMOKE, smoke_overrides

HEX = "0123456789ab"


def plant(path: Path, age_s: float = 0.0) -> Path:
    """A file named like a temp a killed writer left, last modified `age_s` ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial")
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))
    return path


def test_temp_target_names_the_file_a_temp_stands_for():
    assert temp_target(f".manifest.jsonl.{HEX}.tmp") == "manifest.jsonl"
    assert temp_target(f".a1b2.safetensors.{HEX}.tmp") == "a1b2.safetensors"
    assert temp_target("manifest.jsonl") is None and temp_target(f".x.{HEX[:11]}.tmp") is None


def test_under_the_zoo_lock_temps_of_models_and_manifest_go_at_once(tmp_path, caplog):
    store = ZooStore(tmp_path / "zoo" / "tiny")
    fresh = [plant(store.models_dir / f".a1.safetensors.{HEX}.tmp"), plant(store.models_dir / f".a1.json.{HEX}.tmp"),
             plant(store.root / f".manifest.jsonl.{HEX}.tmp")]
    recipe_live = plant(store.root / f".recipe.yaml.{HEX}.tmp")  # `zoo import` writes it without the lock
    recipe_old = plant(store.root / f".recipe.yaml.{'b' * 12}.tmp", age_s=STALE_TEMP_S + 60)
    kept = [plant(store.models_dir / "notes.tmp"), plant(store.root / ".keep.tmp")]  # not atomic-write temps
    link = store.models_dir / f".a2.json.{'c' * 12}.tmp"
    link.symlink_to(kept[0])  # a link is never followed nor removed
    with caplog.at_level(logging.INFO, logger="bench.zoo.store"), store.lock():
        removed = store.clean_stale_temps(time.time())
    assert sorted(removed) == sorted([*fresh, recipe_old])  # before: none of `fresh` (600 s rule)
    assert not any(p.exists() for p in removed)
    assert recipe_live.exists() and link.is_symlink() and all(p.exists() for p in kept)
    assert f"Removed temporary file {fresh[0]}, left by an interrupted write (no writer of it can be live" in caplog.text
    assert f"{recipe_old}, left by an interrupted write (unmodified for over {STALE_TEMP_S:.0f} s)" in caplog.text


def test_fpbench_zoo_removes_a_killed_writers_temp_at_once(smoke_cfg, smoke_zoo, tmp_path, capsys):
    shutil.copytree(smoke_zoo.store.root, tmp_path / "zoo" / smoke_cfg.zoo.name)
    store = ZooStore(tmp_path / "zoo" / smoke_cfg.zoo.name)
    model_id = next(iter(store.records()))
    left = plant(store.models_dir / f".{model_id}.safetensors.{HEX}.tmp")  # a writer killed a moment ago
    assert main(["zoo", str(SMOKE), *smoke_overrides(tmp_path), "methods=[akh]"]) == 0
    assert "0 built" in capsys.readouterr().out  # nothing rebuilt, the temp gone all the same
    assert not left.exists() and store.checkpoint_path(model_id).is_file()


# -- the zoo manifest, read bounded --------------------------------------------------------------------
def manifest_linked_to(tmp_path: Path, target: str) -> ZooStore:
    if not os.path.exists(target):
        pytest.skip(f"no {target} on this system")
    store = ZooStore(tmp_path / "zoo" / "tiny")
    store.root.mkdir(parents=True)
    store.manifest_path.symlink_to(target)
    return store


@pytest.mark.parametrize("read", ["records", "manifest_sha256"])
def test_a_manifest_linked_to_dev_zero_is_refused_naming_it(tmp_path, read):
    store = manifest_linked_to(tmp_path, "/dev/zero")
    with pytest.raises(ZooError) as err:  # before: records() {} (no zoo), manifest_sha256 "No manifest at ..."
        getattr(store, read)()
    assert str(err.value).startswith(f"{store.manifest_path}: not a regular file")
    assert "zoo manifest" in str(err.value)


def test_a_manifest_over_its_bound_is_refused(tmp_path, monkeypatch):
    store = ZooStore(tmp_path / "zoo" / "tiny")
    store.root.mkdir(parents=True)
    store.manifest_path.write_text('{"model_id": "a"}\n' * 10)
    monkeypatch.setattr("bench.zoo.store.MANIFEST_MAX_BYTES", 100)
    for read in (store.records, store.manifest_sha256):
        with pytest.raises(ZooError, match="over the 100-byte bound of a zoo manifest") as err:
            read()
        assert str(err.value).startswith(str(store.manifest_path))


def test_a_dangling_manifest_link_is_refused_not_taken_for_no_zoo(tmp_path):
    store = ZooStore(tmp_path / "zoo" / "tiny")
    store.root.mkdir(parents=True)
    store.manifest_path.symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(ZooError, match="cannot be read"):
        store.records()
    assert ZooStore(tmp_path / "zoo" / "none").records() == {}  # no manifest at all: an empty zoo, as before


def test_the_manifest_bound_has_one_home():
    from bench.report import check
    from bench.zoo import store

    assert check.MANIFEST_MAX_BYTES is store.MANIFEST_MAX_BYTES == 1 << 30


# -- a plot path built from a zoo name stays inside plots/ ---------------------------------------------
def test_the_site_shows_no_plot_outside_the_plots_folder(tmp_path):
    results = tmp_path / "results"
    plant(results / "plots" / "tiny" / "roc.png")
    plant(tmp_path / "secret" / "roc.png")  # results/plots/../../secret/roc.png
    shown = plots(results, ["../../secret", "tiny"])
    assert [zoo["zoo"] for zoo in shown] == ["tiny"] and shown[0]["figures"][0]["href"] == "../plots/tiny/roc.png"
    assert "secret" not in repr(shown)  # before: its figure was shown


# -- help and messages ---------------------------------------------------------------------------------
def test_leaderboard_help_says_how_the_zoo_is_found(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["leaderboard", "-h"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert ("with --check: also check each result against the zoo under DIR whose manifest has its "
            "zoo.manifest_sha256 (none found is a problem): manifest, checkpoint sha256, roles, test_acc") in text


def test_a_full_single_pool_does_not_suggest_an_empty_test_split():
    with pytest.raises(ValueError) as err:
        split_counts(SplitSizes(owner=1000, attacker=397, independent=400, test=None), 1797, None, "digits")
    message = str(err.value)
    assert "leave none for test" in message and "cannot be empty" in message
    assert "test=0" not in message  # refused at load (check_splits_not_empty): it was the suggested fix
    assert "refused at load" in SplitSizes.__doc__


def test_a_fraction_that_rounds_to_nothing_suggests_0_only_for_a_split_that_may_be_empty():
    for split, suggested in (("owner", False), ("independent", True)):
        sizes = SplitSizes(**{"owner": 700, "attacker": 300, "independent": 400, split: 0.0001})
        with pytest.raises(ValueError, match="gives 0 samples") as err:
            split_counts(sizes, 1797, None, "digits")
        assert ("or 0 for an empty split" in str(err.value)) is suggested
