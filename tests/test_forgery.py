"""Forgery a hash cannot stop (issue "Trustworthy verdicts", item 3): a writer who changes a zoo file or
a cached fingerprint *and* recomputes its sha256 is caught by behaviour, before anything is published.

- a checkpoint swapped for another zoo model, its manifest sha256 updated: the labels recorded at build
  time (`check`) no longer come out, the run fails and writes no result;
- `test_acc` edited in the manifest: the re-measured accuracy contradicts it;
- a cached fingerprint edited with its `sha256.json` recomputed: it no longer recognises its source, is
  set aside, regenerated, and the suspects are scored with the genuine one (the scores equal a clean run's).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bench.config import load_recipe
from bench.evaluate import run_benchmark
from bench.io import sha256_file
from bench.methods.base import HASHES_FILE, Fingerprint, fingerprint_sha256
from bench.zoo.integrity import (
    CHECK_SAMPLES,
    LABEL_TOLERANCE,
    ForgedModelError,
    behaviour_problems,
    recorded_outputs,
)
from tests.conftest import SMOKE, smoke_overrides


@pytest.fixture()
def zoo_copy(smoke_cfg, smoke_zoo, tmp_path) -> Path:
    """A private copy of the smoke zoo (the session's stays clean for the other tests)."""
    root = tmp_path / "copy"
    shutil.copytree(Path(smoke_cfg.paths.zoo_dir), root / "zoo")
    return root


def _cfg(root: Path, *extra: str):
    return load_recipe(SMOKE, smoke_overrides(root, "methods=[akh]", *extra))


def _records(root: Path) -> tuple[Path, list[dict]]:
    manifest = root / "zoo" / "smoke" / "manifest.jsonl"
    return manifest, [json.loads(line) for line in manifest.read_text().splitlines()]


def _write(manifest: Path, records: list[dict]) -> None:
    manifest.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def test_every_built_record_carries_its_behaviour(smoke_zoo):
    records = smoke_zoo.store.records()
    x, y = smoke_zoo.datamodule.tensors("test", CHECK_SAMPLES)
    for record in records.values():
        labels, _ = recorded_outputs(record["check"])
        assert record["check"]["n"] == min(CHECK_SAMPLES, smoke_zoo.datamodule.split_size("test")) == len(labels)
        if smoke_zoo.datamodule.split_size("test") <= CHECK_SAMPLES:  # the whole split: the recorded accuracy itself
            assert int((labels == y).sum()) / len(y) == pytest.approx(record["test_acc"])


def test_checkpoint_swapped_with_its_sha256_is_refused(zoo_copy, tmp_path):
    manifest, records = _records(zoo_copy)
    models = zoo_copy / "zoo" / "smoke" / "models"
    victim = next(r for r in records if r["role"] == "negative")
    donor = next(r for r in records if r["role"] == "negative" and r["model_id"] != victim["model_id"]
                 and r["arch"] == victim["arch"] and r["arch_params"] == victim["arch_params"])
    shutil.copy(models / f"{donor['model_id']}.safetensors", models / f"{victim['model_id']}.safetensors")
    victim["sha256"] = sha256_file(models / f"{victim['model_id']}.safetensors")  # the forger fixes the hash
    _write(manifest, records)
    with pytest.raises(ForgedModelError, match=victim["model_id"]) as caught:
        run_benchmark(_cfg(zoo_copy), progress=False)
    assert "logit margins differ from those recorded at build time" in str(caught.value)
    assert not (zoo_copy / "results" / "runs").exists()  # nothing was published


def test_edited_test_acc_is_refused(zoo_copy):
    manifest, records = _records(zoo_copy)
    victim = next(r for r in records if r["role"] == "positive")
    victim["test_acc"] = 0.999
    _write(manifest, records)
    with pytest.raises(ForgedModelError, match="test_acc is recorded as 0.9990"):
        run_benchmark(_cfg(zoo_copy), progress=False)
    assert not (zoo_copy / "results" / "runs").exists()


def test_forged_source_is_refused_before_any_fingerprint(zoo_copy):
    manifest, records = _records(zoo_copy)
    source = next(r for r in records if r["role"] == "source")
    source["check"]["labels"] = source["check"]["labels"][::-1]  # rewritten: not its own labels
    _write(manifest, records)
    with pytest.raises(ForgedModelError, match=source["model_id"]):
        run_benchmark(_cfg(zoo_copy), progress=False)
    assert not (zoo_copy / "cache" / "fingerprints").exists()  # refused before generation


def test_edited_cached_fingerprint_is_set_aside_and_regenerated(zoo_copy, caplog):
    clean = run_benchmark(_cfg(zoo_copy), progress=False)
    (path, result), = clean.results.items()
    assert result["fingerprint"]["self_check"]["passed"] and not result["fingerprint"]["self_check"]["regenerated"]
    (folder,) = [p for p in (zoo_copy / "cache" / "fingerprints" / "akh").iterdir() if p.is_dir()]
    fingerprint = Fingerprint.load(folder)
    labels = next(k for k, v in fingerprint.tensors.items() if v.dtype == torch.int64)
    fingerprint.tensors[labels] = (fingerprint.tensors[labels] + 1) % 10  # every expected label now wrong
    fingerprint.save(folder)  # the forger recomputes sha256.json too
    assert json.loads((folder / HASHES_FILE).read_text())["sha256"] == fingerprint_sha256(
        {n: sha256_file(folder / n) for n in ("fingerprint.safetensors", "fingerprint.json")})
    Path(path).unlink()
    again = run_benchmark(_cfg(zoo_copy), progress=False)
    (_, rerun), = again.results.items()
    assert rerun["fingerprint"]["self_check"]["regenerated"] and rerun["fingerprint"]["self_check"]["passed"]
    assert rerun["fingerprint"]["sha256"] == result["fingerprint"]["sha256"]  # the genuine one, regenerated
    assert [r["score"] for r in rerun["per_model"]] == [r["score"] for r in result["per_model"]]
    assert any(p.name.startswith(folder.name + ".rejected-") for p in folder.parent.iterdir())
    assert "does not recognise its own source" in caplog.text


def test_a_regenerated_fingerprint_has_the_same_sha256(zoo_copy):
    """Timing lives outside the hashed files, so an identical regeneration is recognised as identical."""
    first = run_benchmark(_cfg(zoo_copy), progress=False)
    (_, result), = first.results.items()
    shutil.rmtree(zoo_copy / "cache" / "fingerprints")
    second = run_benchmark(_cfg(zoo_copy, "paths.overwrite_published=true"), progress=False)
    (_, rerun), = second.results.items()
    assert rerun["fingerprint"]["sha256"] == result["fingerprint"]["sha256"]


@pytest.mark.parametrize("case", ["same", "few_flips", "many_flips", "margins_moved"])
def test_tolerance_admits_kernel_noise_not_another_model(smoke_zoo, case):
    """A few flipped labels or margins moved in the sixth digit (another processor) pass; a tolerance's worth
    of flips, or margins that moved like another model's, fail."""
    record = next(r for r in smoke_zoo.store.records().values() if r["role"] == "negative")
    labels, margins = recorded_outputs(record["check"])
    n = len(labels)
    y = smoke_zoo.datamodule.tensors("test", n)[1]
    allowed = int(LABEL_TOLERANCE * n)
    if case == "few_flips":
        labels = labels.clone()
        labels[:2] = (labels[:2] + 1) % 10
    elif case == "many_flips":
        labels = labels.clone()
        labels[:allowed + 3] = (labels[:allowed + 3] + 1) % 10
    elif case == "margins_moved":
        margins = margins * 1.2 + 0.5
    else:
        margins = margins * (1 + 1e-5)
    problems = behaviour_problems(record, (labels, margins), y, None, test_size=smoke_zoo.datamodule.split_size("test"))
    assert (problems == []) == (case in ("same", "few_flips")), problems


def test_verify_refuses_a_fingerprint_that_does_not_recognise_its_source(zoo_copy, capsys):
    """The forger edits the cached fingerprint, its sha256.json *and* the result's fingerprint.sha256."""
    from bench.cli import main

    (path, result), = run_benchmark(_cfg(zoo_copy), progress=False).results.items()
    suspect = next(r["model_id"] for r in result["per_model"] if r["role"] == "positive")
    argv = ["verify", "--fingerprint", path, "--suspect", suspect, "--cache-dir", str(zoo_copy / "cache"),
            "--zoo-dir", str(zoo_copy / "zoo")]
    assert main(argv) == 0
    assert "self-check: the fingerprint scores its own source" in capsys.readouterr().out
    (folder,) = [p for p in (zoo_copy / "cache" / "fingerprints" / "akh").iterdir() if p.is_dir()]
    fingerprint = Fingerprint.load(folder)
    labels = next(k for k, v in fingerprint.tensors.items() if v.dtype == torch.int64)
    fingerprint.tensors[labels] = (fingerprint.tensors[labels] + 1) % 10
    fingerprint.save(folder)
    result["fingerprint"]["sha256"] = fingerprint.sha256
    Path(path).write_text(json.dumps(result))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not recognise its own source" in err and "regenerate" in err
