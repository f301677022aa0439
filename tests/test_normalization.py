"""Normalisation is explicit: a self-normalising model scores the same through `verify` and the zoo.

The case of issue "Trustworthy verdicts": a zoo trained with plain PyTorch whose models normalise
inside `forward`, imported with `mean: [0.0], std: [1.0]` on the source only. Its suspects inherit
that normalisation with the architecture, and `fpbench verify` on a suspect's own file builds it the
same way (the source's normalisation, recorded in the result), so it gives the zoo's score and decision.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.cli import main
from bench.nets import build_model
from tests.conftest import smoke_overrides
from tests.zoo.byo_factories import self_normalizing_cnn
from tests.zoo.test_external import QUIET, _digits, _recipe, plain_fit

ARCH = "factory:tests.zoo.byo_factories:self_normalizing_cnn"


def _fit(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return plain_fit(self_normalizing_cnn(1, 10, 8), *_digits())


@pytest.fixture(scope="module")
def byo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A recipe a user writes: normalisation on the source only; one imported negative, one imported positive."""
    root = tmp_path_factory.mktemp("selfnorm")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    (root / "w").mkdir()
    for name, seed in (("source", 0), ("neg", 11), ("neg2", 12)):
        save_file(_fit(seed).state_dict(), str(root / "w" / f"{name}.safetensors"))
    torch.set_num_threads(threads)
    zoo = {"source": {"factory": "tests.zoo.byo_factories:self_normalizing_cnn", "weights": "w/source.safetensors",
                      "mean": [0.0], "std": [1.0]},
           "positives": [{"attack": "ftal", "epochs": 1}],
           "negatives": [{"weights": "w/neg.safetensors", "kind": "external"},
                         {"weights": "w/neg2.safetensors", "kind": "external"}]}
    recipe = _recipe(root, zoo, "selfnorm")
    assert main(["run", str(recipe), *smoke_overrides(root), *QUIET, "methods=[akh]"]) == 0
    (path,) = sorted((root / "results" / "runs" / "selfnorm" / "akh").glob("*.json"))
    return root, json.loads(path.read_text()) | {"_path": str(path)}


def test_imported_suspects_inherit_the_sources_normalisation(byo_run):
    root, _ = byo_run
    records = [json.loads(line) for line in (root / "zoo" / "selfnorm" / "manifest.jsonl").read_text().splitlines()]
    negatives = [r for r in records if r["role"] == "negative"]
    assert len(negatives) == 2
    for record in negatives:
        state = load_file(str(root / "zoo" / "selfnorm" / "models" / f"{record['model_id']}.safetensors"))
        assert state["normalize.mean"].flatten().tolist() == [0.0] and state["normalize.std"].flatten().tolist() == [1.0]
        # the stored model computes what the user's module computes on raw pixels (no second normalisation)
        mine = self_normalizing_cnn(1, 10, 8)
        name = "neg" if record["provenance"].count("neg.safetensors") else "neg2"
        mine.load_state_dict(load_file(str(root / "w" / f"{name}.safetensors")))
        stored = build_model(record["arch"], in_channels=1, num_classes=10, image_size=8, mean=[0.0], std=[1.0])
        stored.load_state_dict(state)
        x = _digits()[0][:64]
        assert torch.allclose(mine.eval()(x), stored.eval()(x), atol=1e-6)


def _verify(root: Path, result: dict, *extra: str) -> list[str]:
    return ["verify", "--fingerprint", result["_path"], "--cache-dir", str(root / "cache"),
            "--zoo-dir", str(root / "zoo"), "--data-dir", str(root / "data"), *extra]


def _printed(out: str) -> dict[str, str]:
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in out.splitlines() if ":" in line}


@pytest.mark.parametrize("name", ["neg", "neg2"])
def test_verify_on_the_file_gives_the_zoos_score_and_decision(byo_run, capsys, name):
    root, result = byo_run
    records = {json.loads(line)["model_id"]: json.loads(line)
               for line in (root / "zoo" / "selfnorm" / "manifest.jsonl").read_text().splitlines()}
    row = next(r for r in result["per_model"]
               if r["role"] == "negative" and f"{name}.safetensors" in records[r["model_id"]]["provenance"])
    assert main(_verify(root, result, "--suspect", str(root / "w" / f"{name}.safetensors"), "--arch", ARCH)) == 0
    printed = _printed(capsys.readouterr().out)
    assert float(printed["score"]) == pytest.approx(row["score"], abs=1e-6)  # printed to 6 digits
    assert "mean [0.0], std [1.0]" in printed["normalisation"] and "source's" in printed["normalisation"]
    threshold = max(r["score"] for r in result["per_model"] if r["role"] == "negative")
    assert printed["decision"].split()[0] == ("DERIVED" if row["score"] > threshold else "INDEPENDENT")
    assert printed["decision"].split()[0] == "INDEPENDENT"  # a negative never scores above the top negative
    assert float(printed["suspect test accuracy"]) == pytest.approx(records[row["model_id"]]["test_acc"], abs=0.02)


def test_a_wrong_normalisation_is_caught_by_the_accuracy_check(byo_run, capsys):
    """A normalisation far from the model's own wrecks its accuracy: with the owner's recorded accuracy
    `verify` refuses (exit 2, naming the normalisation); without it, it warns next to the score."""
    root, result = byo_run
    weights = str(root / "w" / "neg.safetensors")
    records = [json.loads(line) for line in (root / "zoo" / "selfnorm" / "manifest.jsonl").read_text().splitlines()]
    recorded = next(r["test_acc"] for r in records if "neg.safetensors" in r["provenance"])
    wrong = ["--mean", "5", "--std", "1"]  # every pixel shifted by -5: far outside what the model was trained on
    assert main(_verify(root, result, "--suspect", weights, "--arch", ARCH, *wrong, "--test-acc", f"{recorded}")) == 2
    err = capsys.readouterr().err
    assert f"{recorded:.4f}" in err and "normalisation" in err
    assert main(_verify(root, result, "--suspect", weights, "--arch", ARCH, *wrong)) == 0
    out = capsys.readouterr().out
    assert float(_printed(out)["suspect test accuracy"]) < recorded - 0.3
    assert "WARNING" in out and "normalisation is probably wrong" in out
    # the right one passes the owner's figure
    assert main(_verify(root, result, "--suspect", weights, "--arch", ARCH, "--test-acc", f"{recorded}")) == 0
    assert "WARNING" not in capsys.readouterr().out


@pytest.mark.parametrize("flags, needle", [(["--mean", "0"], "together"), (["--mean", "x", "--std", "1"], "numbers"),
                                           (["--mean", "0", "--std", "0"], "> 0"),
                                           (["--mean", "nan", "--std", "1"], "finite")])
def test_bad_normalisation_flags_exit_2(byo_run, capsys, flags, needle):
    root, result = byo_run
    argv = _verify(root, result, "--suspect", str(root / "w" / "neg.safetensors"), "--arch", ARCH, *flags)
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_an_explicit_normalisation_on_a_suspect_wins(byo_run, tmp_path):
    """A suspect entry's own `mean`/`std` are kept (only missing ones are inherited)."""
    root, _ = byo_run
    shutil.copytree(root / "w", tmp_path / "w")
    zoo = {"source": {"factory": "tests.zoo.byo_factories:self_normalizing_cnn", "weights": "w/source.safetensors",
                      "mean": [0.0], "std": [1.0]},
           "negatives": [{"weights": "w/neg.safetensors", "kind": "external", "mean": [0.5], "std": [0.5]}]}
    recipe = _recipe(tmp_path, zoo, "explicit")
    assert main(["zoo", str(recipe), *smoke_overrides(tmp_path), *QUIET]) == 0
    records = [json.loads(line) for line in (tmp_path / "zoo" / "explicit" / "manifest.jsonl").read_text().splitlines()]
    negative = next(r for r in records if r["role"] == "negative")
    state = load_file(str(tmp_path / "zoo" / "explicit" / "models" / f"{negative['model_id']}.safetensors"))
    assert state["normalize.mean"].flatten().tolist() == [0.5]


def _manifest(root: Path, zoo: str) -> list[dict]:
    return [json.loads(line) for line in (root / "zoo" / zoo / "manifest.jsonl").read_text().splitlines()]


def test_an_imported_model_is_checked_against_its_owners_accuracy(byo_run, tmp_path, capsys):
    """`test_acc:` on an imported entry (or in `zoo import`'s meta.yaml): the measured accuracy must match it,
    else exit 2 at planning, naming the file and the normalisation, with nothing built."""
    root, _ = byo_run
    shutil.copytree(root / "w", tmp_path / "w")
    recorded = next(r["test_acc"] for r in _manifest(root, "selfnorm") if "neg.safetensors" in r["provenance"])
    source = {"factory": "tests.zoo.byo_factories:self_normalizing_cnn", "weights": "w/source.safetensors",
              "mean": [0.0], "std": [1.0]}
    good = _recipe(tmp_path, {"source": source, "negatives": [
        {"weights": "w/neg.safetensors", "kind": "external", "test_acc": recorded}]}, "good")
    assert main(["zoo", str(good), *smoke_overrides(tmp_path), *QUIET]) == 0
    wrong = _recipe(tmp_path, {"source": source, "negatives": [  # the owner's figure with the dataset's normalisation
        {"weights": "w/neg.safetensors", "kind": "external", "test_acc": recorded, "mean": [5.0], "std": [1.0]}]},
        "wrong")
    assert main(["zoo", str(wrong), *smoke_overrides(tmp_path), *QUIET]) == 2
    err = capsys.readouterr().err
    assert "w/neg.safetensors" in err and f"test_acc {recorded:.4f}" in err and "normalisation" in err
    assert not (tmp_path / "zoo" / "wrong" / "manifest.jsonl").exists()


def test_test_acc_on_a_trained_entry_is_refused(tmp_path, capsys):
    recipe = _recipe(tmp_path, {"source": {"arch": "convnet", "epochs": 1, "test_acc": 0.9}}, "trained")
    assert main(["zoo", str(recipe), "--list", *smoke_overrides(tmp_path), *QUIET]) == 2
    assert "test_acc" in capsys.readouterr().err
