"""Bring your own architecture (docs/byo.md): `factory:` models and timm weights under timm's own key names.

Every model here is made by a plain-PyTorch or plain-timm script, as a user would; fpbench imports
it through a recipe and the CLI. timm's `pretrained: true` path runs offline through timm's own
`local-dir:` source (a folder in the Hub layout), so timm's loader and its key handling are what is tested.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.nets import build_model
from bench.nets.timm_net import pretrained_features_state
from tests.conftest import smoke_overrides
from tests.zoo.byo_factories import small_cnn
from tests.zoo.test_external import GUARDS, QUIET, TRAIN, _digits, _recipe, _results, _run, plain_fit

FACTORY = "tests.zoo.byo_factories"


def _plain_fit(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A user's own loop on the digits (inputs in [0, 1], no normalisation inside the model)."""
    torch.manual_seed(seed)
    return plain_fit(model, *_digits())


@pytest.fixture(scope="module")
def byo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("byo")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    torch.save(_plain_fit(small_cnn(1, 10, 8), 0).state_dict(), folder / "source.pt")
    save_file(_plain_fit(small_cnn(1, 10, 8), 1).state_dict(), str(folder / "other.safetensors"))
    import timm

    torch.manual_seed(0)
    timm_model = _plain_fit(timm.create_model("test_resnet", num_classes=10, in_chans=1), 2)
    torch.save(timm_model.state_dict(), folder / "timm_native.pt")  # timm's own key names: conv1.0.weight, fc.weight
    torch.manual_seed(0)
    timm.models.save_for_hf(timm.create_model("test_resnet"), folder / "hub", safe_serialization="both")
    (folder / "hub" / "pytorch_model.bin").unlink()  # the folder fpbench reads holds safetensors only
    torch.set_num_threads(threads)
    return folder


def test_factory_whole_model_imports_attacks_and_runs(byo: Path, tmp_path: Path):
    shutil.copytree(byo, tmp_path / "w")
    zoo = {"source": {"factory": f"{FACTORY}:small_cnn", "weights": "w/source.pt", "mean": [0.0], "std": [1.0]},
           "positives": [{"attack": "ftal", "epochs": 1}, {"attack": "prune", "rate": 0.4, "epochs": 1}],
           "negatives": [{"factory": f"{FACTORY}:small_cnn", "weights": "w/other.safetensors", "mean": [0.0],
                          "std": [1.0], "kind": "external"}]}
    recipe = _recipe(tmp_path, zoo, "fac")
    assert _run("run", str(recipe), *smoke_overrides(tmp_path), *QUIET, GUARDS) == 0
    records = [json.loads(line) for line in (tmp_path / "zoo" / "fac" / "manifest.jsonl").read_text().splitlines()]
    source = next(r for r in records if r["role"] == "source")
    assert source["arch"] == f"factory:{FACTORY}:small_cnn"
    # The stored checkpoint computes what the user's module computes.
    mine = small_cnn(1, 10, 8)
    mine.load_state_dict(torch.load(byo / "source.pt", weights_only=True))
    stored = build_model(source["arch"], in_channels=1, num_classes=10, image_size=8, mean=[0.0], std=[1.0])
    stored.load_state_dict(load_file(str(tmp_path / "zoo" / "fac" / "models" / f"{source['model_id']}.safetensors")))
    x, _ = _digits()
    assert torch.allclose(mine(x[:64]), stored.eval()(x[:64]), atol=1e-6)
    assert not stored.has_linear_head and source["test_acc"] > 0.5
    scores = _results(tmp_path, "fac")["oracle_label"]
    assert sorted(role for role, _ in scores) == ["negative", "positive", "positive"]


def test_factory_whole_model_refuses_head_attacks_before_training(byo: Path, tmp_path: Path, capsys):
    shutil.copytree(byo, tmp_path / "w")
    zoo = {"source": {"factory": f"{FACTORY}:small_cnn", "weights": "w/source.pt"},
           "positives": [{"attack": "ftal", "epochs": 1}, {"attack": "ftll", "epochs": 1}], "negatives": []}
    assert _run("zoo", str(_recipe(tmp_path, zoo, "nohead")), *smoke_overrides(tmp_path), *QUIET) == 2
    err = capsys.readouterr().err
    assert "ftll retrains or resets the last linear layer" in err and "(features, feature_dim)" in err
    assert not list((tmp_path / "zoo").glob("nohead/models/*.safetensors"))  # not even the ftal positive was trained


def test_factory_features_contract_trains_like_a_registered_arch(tmp_path: Path):
    zoo = {"source": {**TRAIN, "epochs": 1, "factory": f"{FACTORY}:cnn_features", "arch_params": {"width": 4}},
           "positives": [{"attack": "ftll", "epochs": 1}, {"attack": "rtal", "epochs": 1}],
           "negatives": [{"kind": "SAST", "seed": 1}]}
    recipe = _recipe(tmp_path, zoo, "feat")
    assert _run("run", str(recipe), *smoke_overrides(tmp_path), *QUIET, "methods=[oracle_label]") == 0
    records = [json.loads(line) for line in (tmp_path / "zoo" / "feat" / "manifest.jsonl").read_text().splitlines()]
    assert {r["arch"] for r in records} == {f"factory:{FACTORY}:cnn_features"}
    assert all(r["arch_params"] == {"width": 4} for r in records)


@pytest.mark.parametrize("source, needle", [
    ({"factory": "tests.zoo.no_such_module:make"}, "cannot import module 'tests.zoo.no_such_module'"),
    ({"factory": f"{FACTORY}:missing"}, "has no attribute 'missing'"),
    ({"factory": f"{FACTORY}:no_shape_args"}, "must accept in_channels, num_classes, image_size"),
    ({"factory": f"{FACTORY}:small_cnn", "arch_params": {"depth": 3}}, "Unknown param(s) ['depth']"),
    ({"factory": f"{FACTORY}:small_cnn", "arch": "lenet"}, "name two architectures"),
    ({"arch": f"factory:{FACTORY}:returns_a_string"}, "returned a str"),
])
def test_bad_factories_exit_2_and_build_nothing(tmp_path: Path, capsys, source: dict, needle: str):
    zoo = {"source": {**TRAIN, "epochs": 1, **source}, "positives": [], "negatives": []}
    assert _run("zoo", str(_recipe(tmp_path, zoo, "badfac")), *smoke_overrides(tmp_path), *QUIET) == 2
    assert needle in capsys.readouterr().err
    assert not list((tmp_path / "zoo").glob("badfac/models/*"))


def test_timm_state_dict_under_timm_key_names_imports_exactly(byo: Path, tmp_path: Path):
    shutil.copytree(byo, tmp_path / "w")
    zoo = {"source": {"weights": "w/timm_native.pt", "arch": "timm:test_resnet", "mean": [0.0], "std": [1.0]},
           "positives": [{"attack": "ftll", "epochs": 1}], "negatives": []}
    assert _run("zoo", str(_recipe(tmp_path, zoo, "tm")), *smoke_overrides(tmp_path), *QUIET) == 0
    import timm

    mine = timm.create_model("test_resnet", num_classes=10, in_chans=1)
    mine.load_state_dict(torch.load(byo / "timm_native.pt", weights_only=True))
    source = next(json.loads(line) for line in (tmp_path / "zoo" / "tm" / "manifest.jsonl").read_text().splitlines()
                  if json.loads(line)["role"] == "source")
    stored = build_model("timm:test_resnet", in_channels=1, num_classes=10, image_size=8, mean=[0.0], std=[1.0])
    state = load_file(str(tmp_path / "zoo" / "tm" / "models" / f"{source['model_id']}.safetensors"))
    assert "head.weight" in state and "features.fc.weight" not in state  # timm's classifier became fpbench's head
    stored.load_state_dict(state)
    x, _ = _digits()
    assert torch.allclose(mine.eval()(x[:64]), stored.eval()(x[:64]), atol=1e-5)


def test_timm_pretrained_true_loads_through_timm_offline(byo: Path, tmp_path: Path):
    hub = byo / "hub"
    arch = f"timm:local-dir:{hub}"
    state = pretrained_features_state(arch, 1, {})
    published = load_file(str(hub / "model.safetensors"))
    first = "conv1.0.weight"  # timm adapts the RGB stem to one channel by summing its filters
    assert torch.allclose(state[first], published[first].sum(1, keepdim=True))
    assert all(torch.equal(state[k], published[k]) for k in state if k != first)
    assert "fc.weight" not in state  # the classifier is dropped: fpbench's head is sized for the task
    zoo = {"source": {**TRAIN, "epochs": 1, "arch": arch, "pretrained": True},
           "negatives": [{"kind": "PTFT", "seed": 1}], "positives": [{"attack": "ftal", "epochs": 1}]}
    assert _run("zoo", str(_recipe(tmp_path, zoo, "hub")), *smoke_overrides(tmp_path), *QUIET) == 0
    records = [json.loads(line) for line in (tmp_path / "zoo" / "hub" / "manifest.jsonl").read_text().splitlines()]
    assert next(r for r in records if r["role"] == "source")["provenance"].startswith(f"pretrained({arch})->train(")
    assert next(r for r in records if r["kind"] == "PTFT")["params"]["pretrained"] is True


def test_timm_hub_names_are_checked(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    for arch, needle in ((f"timm:local-dir:{tmp_path / 'empty'}", "cannot read"), ("timm:hf-hub:", "names no model")):
        zoo = {"source": {**TRAIN, "arch": arch, "pretrained": True}, "positives": [], "negatives": []}
        assert _run("zoo", str(_recipe(tmp_path, zoo, "badhub")), *smoke_overrides(tmp_path), *QUIET) == 2
        assert needle in capsys.readouterr().err


@pytest.mark.slow
def test_external_weights_and_factories_build_the_same_zoo_under_ray(byo: Path, tmp_path: Path):
    """Ray workers read the planned files by absolute path (one machine or a shared filesystem) and import the factory."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    zoo = {"source": {"factory": f"{FACTORY}:small_cnn", "weights": "w/source.pt", "mean": [0.0], "std": [1.0]},
           "positives": [{"attack": "ftal", "epochs": 1}, {"weights": "w/other.safetensors", "label": "stolen",
                                                            "factory": f"{FACTORY}:small_cnn"}],
           "negatives": [{"kind": "SAST", **TRAIN, "epochs": 1, "seed": 1}]}
    roots = {}
    for executor in ("local", "ray"):
        root = tmp_path / executor
        shutil.copytree(byo, root / "w")
        extra = ["compute.executor=ray", "compute.workers=2"] if executor == "ray" else []
        assert _run("zoo", str(_recipe(root, zoo, "rayfac")), *smoke_overrides(root), *QUIET, *extra) == 0
        roots[executor] = [json.loads(line) for line in (root / "zoo" / "rayfac" / "manifest.jsonl").read_text().splitlines()]
    local, ray = roots["local"], roots["ray"]
    assert [r["model_id"] for r in ray] == [r["model_id"] for r in local]
    for mine, theirs in zip(local, ray):
        assert theirs["test_acc"] == pytest.approx(mine["test_acc"], abs=0.02), mine["provenance"]
        if "external" in mine:  # an imported file, stored byte for byte
            assert theirs["sha256"] == mine["sha256"], mine["provenance"]
    assert sum("external" in r for r in ray) == 2
