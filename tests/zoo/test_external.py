"""External models (docs/byo.md): weights files in recipes, `fpbench zoo import`, bad files refused."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from bench.cli import main
from bench.nets import build_model
from tests.conftest import smoke_overrides

DATA = {"name": "digits", "splits": {"owner": 300, "attacker": 200, "independent": 200, "test": 300}, "batch_size": 64}
TRAIN = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}
QUIET = ["tracking.wandb.mode=disabled", "compute.trainer.enable_progress_bar=false", "eval.progress=false",
         "compute.cpu_threads=1"]
GUARDS = "methods=[akh,oracle_label,random]"


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(digits.target)


def _plain_train(arch: str = "convnet", seed: int = 0, num_classes: int = 10, image_size: int = 8) -> torch.nn.Module:
    """A plain PyTorch loop, no fpbench training: what a user brings."""
    torch.manual_seed(seed)
    model = build_model(arch, in_channels=1, num_classes=num_classes, image_size=image_size, mean=[0.3], std=[0.4])
    x, y = _digits()
    if image_size != 8:
        x = torch.nn.functional.interpolate(x, size=image_size)
    return plain_fit(model, x, y % num_classes)


def plain_fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    """A user's own loop: 30 SGD steps on random batches of 64 (draws from torch's global RNG)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(30):
        idx = torch.randint(0, len(x), (64,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.save(_plain_train(seed=0).state_dict(), folder / "source.pt")
    save_file(_plain_train(seed=1).state_dict(), str(folder / "stolen.safetensors"))
    torch.save(_plain_train(seed=2).state_dict(), folder / "other.pt")
    torch.save(_plain_train(num_classes=5).state_dict(), folder / "five_classes.pt")
    torch.save(_plain_train(arch="mlp", image_size=16).state_dict(), folder / "mlp16.pt")
    torch.save(_plain_train(arch="mlp"), folder / "module.pt")  # a pickled nn.Module
    data = (folder / "stolen.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    torch.set_num_threads(threads)  # the suite's other tests keep their own thread count
    return folder


def _recipe(folder: Path, zoo: dict, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"data": DATA, "zoo": {"name": name, **zoo}}))
    return path


def _run(*args: str) -> int:
    return main(list(args))


def _results(root: Path, zoo: str) -> dict[str, list[tuple]]:
    out = {}
    for path in sorted((root / "results" / "runs" / zoo).rglob("*.json")):
        result = json.loads(path.read_text())
        out[result["method"]["name"]] = [(m["role"], m["score"]) for m in result["per_model"]]
    return out


def test_recipe_with_weights_builds_an_ordinary_zoo(weights: Path, tmp_path: Path):
    shutil.copytree(weights, tmp_path / "w")
    zoo = {"source": {"weights": "w/source.pt", "arch": "convnet"},
           "positives": [{"weights": "w/stolen.safetensors", "label": "stolen", "attack": "unknown"},
                         {"attack": "ftll", "epochs": 1}],  # attacks on an imported source keep working
           "negatives": [{"weights": "w/other.pt", "kind": "external"}]}
    recipe = _recipe(tmp_path, zoo, "byo")
    assert _run("zoo", str(recipe), *smoke_overrides(tmp_path), *QUIET) == 0
    manifest = (tmp_path / "zoo" / "byo" / "manifest.jsonl").read_text()
    assert str(tmp_path) not in manifest  # no absolute path in the manifest
    records = [json.loads(line) for line in manifest.splitlines()]
    source = next(r for r in records if r["role"] == "source")
    assert source["provenance"].startswith("imported from w/source.pt (sha256 ")
    assert source["external"]["weights"] == "w/source.pt"
    # The imported checkpoint computes exactly what the user's model computes.
    x, y = _digits()
    mine = build_model("convnet", in_channels=1, num_classes=10, image_size=8, mean=[0.3], std=[0.4])
    mine.load_state_dict(torch.load(weights / "source.pt", weights_only=True))
    stored = build_model("convnet", in_channels=1, num_classes=10, image_size=8, mean=[0.3], std=[0.4])
    stored.load_state_dict(load_file(str(tmp_path / "zoo" / "byo" / "models" / f"{source['model_id']}.safetensors")))
    assert torch.equal(mine.eval()(x[:50]), stored.eval()(x[:50]))
    assert 0.3 < source["test_acc"] <= 1.0
    ftll = next(r for r in records if r["attack"] and r["attack"].startswith("ftll"))
    assert ftll["parent"] == source["model_id"] and ftll["provenance"].startswith("imported from w/source.pt")
    # Same file, same id: a rebuild imports nothing again; run works on it unchanged.
    assert _run("run", str(recipe), *smoke_overrides(tmp_path), *QUIET, GUARDS) == 0
    assert len(_results(tmp_path, "byo")["oracle_label"]) == 3


def _export(store_root: Path, out: Path) -> None:
    """Lay a built zoo out as a published zoo: a folder per model, weights + meta.yaml (docs/byo.md)."""
    records = [json.loads(line) for line in (store_root / "manifest.jsonl").read_text().splitlines()]
    for n, record in enumerate(records):
        role = {"source": "source", "positive": "positives", "negative": "negatives"}[record["role"]]
        folder = out / role if role == "source" else out / role / f"{n:02d}"
        folder.mkdir(parents=True)
        state = load_file(str(store_root / "models" / f"{record['model_id']}.safetensors"))
        if n % 2:  # half as torch state dicts, half as safetensors
            torch.save(state, folder / "model.pt")
        else:
            save_file(state, str(folder / "model.safetensors"))
        meta = {"arch": record["arch"], "arch_params": record["arch_params"], "num_classes": 10,
                "input_shape": [1, 8, 8], "label": record["attack"], "attack": record["attack"], "kind": record["kind"]}
        if role == "source":
            meta.update(dataset="digits", data={"splits": DATA["splits"], "batch_size": 64})
        (folder / "meta.yaml").write_text(yaml.safe_dump({k: v for k, v in meta.items() if v is not None}))


def test_imported_zoo_scores_equal_the_trained_zoo(tmp_path: Path):
    zoo = {"source": TRAIN, "positives": [{"attack": "ftll", "epochs": 1}, {"attack": "prune", "rate": 0.5, "epochs": 0}],
           "negatives": [{"kind": "SAST", "seed": 1, "epochs": 2}]}
    recipe = _recipe(tmp_path, zoo, "trained")
    overrides = [*smoke_overrides(tmp_path), *QUIET]
    assert _run("run", str(recipe), *overrides, GUARDS) == 0
    _export(tmp_path / "zoo" / "trained", tmp_path / "published")
    assert _run("zoo", "import", str(tmp_path / "published"), "--name", "imported", "--zoo-dir",
                str(tmp_path / "zoo"), *QUIET) == 0
    imported_recipe = tmp_path / "zoo" / "imported" / "recipe.yaml"
    weights_lines = [line for line in imported_recipe.read_text().splitlines() if "weights:" in line]
    assert len(weights_lines) == 4 and all("../../published/" in line for line in weights_lines)  # relative
    assert _run("run", str(imported_recipe), *overrides, GUARDS) == 0
    trained, imported = _results(tmp_path, "trained"), _results(tmp_path, "imported")
    assert set(trained) == {"akh", "oracle_label", "random"}
    for method in trained:
        assert imported[method] == trained[method], method


def _cli_rejects(tmp_path: Path, entry: dict) -> str:
    recipe = _recipe(tmp_path, {"source": entry, "negatives": [], "positives": []}, "bad")
    code = _run("zoo", str(recipe), *smoke_overrides(tmp_path), *QUIET)
    assert code == 2
    assert not (tmp_path / "zoo" / "bad").exists() and not (tmp_path / "results").exists()
    return ""


@pytest.mark.parametrize("entry, needles", [
    ({"weights": "w/source.pt", "arch": "lenet"}, ["missing keys:", "unexpected keys:"]),
    ({"weights": "w/five_classes.pt", "arch": "convnet"}, ["class-count mismatch", "5 outputs", "10 classes"]),
    ({"weights": "w/mlp16.pt", "arch": "mlp"}, ["shape mismatch", "1x8x8"]),
    ({"weights": "w/truncated.safetensors", "arch": "convnet"}, ["corrupted or truncated"]),
    ({"weights": "w/module.pt", "arch": "mlp"}, ["never unpickles", "state_dict()"]),
    ({"weights": "w/nothing.pt", "arch": "convnet"}, ["not found"]),
])
def test_bad_weights_exit_2_and_write_nothing(weights: Path, tmp_path: Path, capsys, entry, needles):
    shutil.copytree(weights, tmp_path / "w")
    _cli_rejects(tmp_path, entry)
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what an unpickler would run: create the marker file
        return (Path.touch, (self.marker,))


def test_pickle_payload_is_never_executed(tmp_path: Path, capsys):
    marker = tmp_path / "pwned"
    (tmp_path / "w").mkdir()
    torch.save({"weight": _Payload(marker)}, tmp_path / "w" / "evil.pt")
    with open(tmp_path / "w" / "evil_raw.pt", "wb") as f:
        pickle.dump(_Payload(marker), f)
    for name in ("evil.pt", "evil_raw.pt"):
        _cli_rejects(tmp_path, {"weights": f"w/{name}", "arch": "convnet"})
        assert not marker.exists()
    assert capsys.readouterr().err.count("never unpickles") == 2


def test_pretrained_weights_and_ptft_negative(weights: Path, tmp_path: Path):
    shutil.copytree(weights, tmp_path / "w")
    zoo = {"source": {**TRAIN, "epochs": 1, "pretrained_weights": "w/other.pt"},
           "negatives": [{"kind": "PTFT", "seed": 1}], "positives": [{"attack": "ftal", "epochs": 1}]}
    recipe = _recipe(tmp_path, zoo, "pre")
    assert _run("zoo", str(recipe), *smoke_overrides(tmp_path), *QUIET) == 0
    records = [json.loads(line) for line in (tmp_path / "zoo" / "pre" / "manifest.jsonl").read_text().splitlines()]
    ptft = next(r for r in records if r["kind"] == "PTFT")
    source = next(r for r in records if r["role"] == "source")
    assert ptft["split"] == "independent" and ptft["params"]["pretrained_weights"] == "w/other.pt"
    assert source["external"]["sha256"] == ptft["external"]["sha256"] and source["provenance"].startswith("pretrained(")
    bad = _recipe(tmp_path, {"source": TRAIN, "negatives": [{"kind": "PTFT", "seed": 1}]}, "nopre")
    assert _run("zoo", str(bad), *smoke_overrides(tmp_path), *QUIET) == 2  # PTFT needs a pretrained source
