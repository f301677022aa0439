"""Malformed weights files (docs/byo.md, "Formats and security"): each is a ConfigError naming the file
as written, the problem and the fix, and exit 2 through `fpbench zoo` and `fpbench verify`; Lightning
checkpoints and `{'state_dict': ...}` dicts are read."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import save_file

from bench.cli import main
from bench.config import ConfigError
from bench.methods.base import Fingerprint
from bench.nets import build_model
from bench.verification import load_weights_model
from bench.zoo.external import WEIGHT_SUFFIXES, load_external
from tests.conftest import smoke_overrides

DIGITS = {"name": "digits", "in_channels": 1, "num_classes": 10, "image_size": 8, "mean": [0.3], "std": [0.4]}
SHAPE = {k: v for k, v in DIGITS.items() if k != "name"}  # build_model's arguments
QUIET = ["tracking.wandb.mode=disabled", "compute.trainer.enable_progress_bar=false", "eval.progress=false",
         "compute.cpu_threads=1"]


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng():  # the suite's global RNG stream is left as it was
        torch.manual_seed(seed)
        return build_model("convnet", **SHAPE).state_dict()


def _blanked(value: float) -> dict[str, torch.Tensor]:
    """Every floating weight (normalisation kept) set to `value`: all-NaN, or all-zero weights."""
    return {k: v if k.startswith("normalize.") or not v.is_floating_point() else torch.full_like(v, value)
            for k, v in _state().items()}


def _one_inf(path: Path) -> None:
    state = _state()
    state["head.bias"][3] = float("inf")
    torch.save(state, path)


def _fifo(path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(path)


# (file name, how to write it, what the message must say besides the file's name)
MALFORMED: list[tuple[str, Callable[[Path], object], list[str]]] = [
    ("text.pt", lambda p: p.write_text("hello, these are not weights\n"),
     ["neither a safetensors file nor a torch.save file", "b'hello, t'"]),
    ("empty.safetensors", lambda p: p.write_bytes(b""), ["is empty (0 bytes)", "Export it again"]),
    ("huge_header.safetensors", lambda p: p.write_bytes(struct.pack("<Q", 2**62) + b'{"a": 1}'),
     ["corrupted or truncated safetensors", f"says {2**62} bytes", "the whole file has 16"]),
    ("passwd.safetensors", lambda p: p.write_text("root:x:0:0:root:/root:/bin/bash\nbin:x:1:1::/:/sbin/nologin\n"),
     ["neither a safetensors file nor a torch.save file", "header length reads", "b'root:x:0'"]),
    ("bad_json.safetensors", lambda p: p.write_bytes(struct.pack("<Q", 5) + b"{oops"),
     ["corrupted or truncated safetensors", "JSON header is unreadable"]),
    ("garbage_pickle.pt", lambda p: p.write_bytes(b"\x80\x02" + b"hello world" * 3),
     ["not a readable torch.save file", "corrupted or truncated"]),
    ("all_nan.safetensors", lambda p: save_file(_blanked(float("nan")), str(p)),
     ["'features.0.weight'", "non-finite", "NaN or inf"]),
    ("one_inf.pt", _one_inf, ["'head.bias'", "1 non-finite value(s)"]),
    ("zeros.pt", lambda p: torch.save(_blanked(0.0), p), ["all", "exactly zero", "'features.0.weight'"]),
    ("empty_dict.pt", lambda p: torch.save({}, p), ["holds no tensors"]),
    ("list.pt", lambda p: torch.save([torch.ones(2)], p), ["holds a Python list", "state_dict()"]),
    ("nested.pt", lambda p: torch.save({"weights": _state()}, p),
     ["key 'weights' holds a Python OrderedDict, not a tensor", "state_dict()"]),
    ("int_keys.pt", lambda p: torch.save({0: torch.ones(2)}, p), ["key 0 is a Python int, not a string name"]),
    ("sparse.pt", lambda p: torch.save({"w": torch.eye(3).to_sparse()}, p), ["'w' is torch.sparse_coo", "not dense"]),
    ("hparams.ckpt", lambda p: torch.save({"state_dict": _state(), "hyper_parameters": {"lr": Fraction(1, 10)}}, p),
     ["holds pickled Python objects", "never unpickles", "module.model.state_dict()"]),
    ("model.safetensors", lambda p: p.mkdir(), ["is a directory, not a file"]),
    ("fifo.pt", _fifo, ["is a FIFO (named pipe), not a regular file"]),
    ("device.pt", lambda p: p.symlink_to(os.devnull), ["is a character device, not a regular file"]),
]


def _write(tmp_path: Path, name: str, make: Callable[[Path], object]) -> str:
    """Write the file under `tmp_path/w/` and return its path relative to `tmp_path`, as a recipe gives it."""
    (tmp_path / "w").mkdir(exist_ok=True)
    make(tmp_path / "w" / name)
    return f"w/{name}"


@pytest.mark.parametrize("name, make, needles", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_file_is_a_config_error_naming_file_and_problem(tmp_path: Path, name, make, needles):
    given = _write(tmp_path, name, make)
    with pytest.raises(ConfigError) as info:
        load_external({"weights": given, "arch": "convnet"}, SimpleNamespace(**DIGITS), str(tmp_path), "source")
    message = str(info.value)
    assert f"weights file '{given}'" in message, message
    for needle in needles:
        assert needle in message, message


def _lightning_checkpoint(path: Path) -> torch.nn.Module:
    """A real `Trainer.save_checkpoint` of fpbench's ClassifierModule after one SGD step; returns the net."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from bench.config import OptimizerConfig, ScheduleConfig
    from bench.training import ClassifierModule

    module = ClassifierModule(build_model("convnet", **SHAPE), OptimizerConfig(), ScheduleConfig(), epochs=1)
    loader = DataLoader(TensorDataset(torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))), batch_size=16)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1, default_root_dir=str(path.parent))
    trainer.fit(module, loader)
    trainer.save_checkpoint(str(path))
    return module.model.eval()


def test_lightning_checkpoint_loads_to_the_same_model(tmp_path: Path):
    assert ".ckpt" in WEIGHT_SUFFIXES
    net = _lightning_checkpoint(tmp_path / "last.ckpt")
    assert "optimizer_states" in torch.load(tmp_path / "last.ckpt", weights_only=True)  # a full training checkpoint
    x = torch.rand(4, 1, 8, 8)
    for model in (load_external({"weights": "last.ckpt", "arch": "convnet"}, SimpleNamespace(**DIGITS),
                                str(tmp_path), "source"),
                  load_weights_model(tmp_path / "last.ckpt", "convnet", DIGITS)):  # `fpbench verify --suspect`
        with torch.no_grad():
            assert torch.equal(model.eval()(x), net(x))


@pytest.mark.parametrize("wrap", [
    lambda s: {"state_dict": {f"model.{k}": v for k, v in s.items()}, "optimizer_states": [{"lr": 0.1}], "epoch": 3},
    lambda s: {"state_dict": {f"net.{k}": v for k, v in s.items()}, "hyper_parameters": {"lr": 0.1}},
    lambda s: {"state_dict": s},
], ids=["model_prefix", "net_prefix", "no_prefix"])
@pytest.mark.parametrize("name", ["wrapped.pt", "wrapped.ckpt", "zip_named.safetensors"])
def test_state_dict_wrappers_are_read(tmp_path: Path, wrap, name):
    state = _state(seed=1)
    torch.save(wrap(state), tmp_path / name)  # the format is told from the content, not the suffix
    model = load_external({"weights": name, "arch": "convnet"}, SimpleNamespace(**DIGITS), str(tmp_path), "source")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_partly_prefixed_checkpoint_keys_are_not_guessed(tmp_path: Path):
    state = {f"model.{k}": v for k, v in _state().items()}
    state["criterion.weight"] = torch.ones(10)  # not every key is the net's: nothing is stripped or dropped
    torch.save({"state_dict": state}, tmp_path / "mixed.ckpt")
    with pytest.raises(ConfigError, match="missing keys: .*unexpected keys: criterion.weight, model."):
        load_external({"weights": "mixed.ckpt", "arch": "convnet"}, SimpleNamespace(**DIGITS), str(tmp_path), "source")


CLI_CASES = ["text.pt", "huge_header.safetensors", "all_nan.safetensors", "model.safetensors", "device.pt"]


def _case(name: str) -> tuple[Callable[[Path], object], list[str]]:
    return next((make, needles) for case, make, needles in MALFORMED if case == name)


@pytest.mark.parametrize("name", CLI_CASES)
def test_fpbench_verify_exits_2_naming_the_file(tmp_path: Path, capsys, name):
    make, needles = _case(name)
    given = str(tmp_path / _write(tmp_path, name, make))
    Fingerprint("akh", {"x": torch.zeros(1, 1, 8, 8)}, {}).save(tmp_path / "fp")  # a cached fingerprint folder
    code = main(["verify", "--fingerprint", str(tmp_path / "fp"), "--suspect", given, "--arch", "convnet",
                 "--data", "digits", "--cache-dir", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert f"'{given}'" in captured.err and all(needle in captured.err for needle in needles), captured.err
    assert "score:" not in captured.out


@pytest.mark.parametrize("key, name", [*[("weights", name) for name in CLI_CASES],
                                       ("pretrained_weights", "all_nan.safetensors"), ("pretrained_weights", "text.pt")])
def test_fpbench_zoo_exits_2_naming_the_file_and_writes_nothing(tmp_path: Path, capsys, key, name):
    make, needles = _case(name)
    given = _write(tmp_path, name, make)
    data = {"name": "digits", "splits": {"owner": 300, "attacker": 200, "independent": 200, "test": 300}}
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump({"data": data, "zoo": {"name": "bad", "negatives": [], "positives": [],
                                                            "source": {key: given, "arch": "convnet"}}}))
    code = main(["zoo", str(recipe), *smoke_overrides(tmp_path), *QUIET])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"'{given}'" in err and all(needle in err for needle in needles), err
    assert not (tmp_path / "zoo" / "bad").exists()


def test_safetensors_header_starting_like_a_pickle_is_read_as_safetensors(tmp_path: Path):
    """A header length of 128 + 256k bytes makes the file's first byte b'\\x80', a pickle's first byte."""
    state, path = _state(seed=2), tmp_path / "model.safetensors"
    for pad in range(300):
        save_file(state, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    model = load_external({"weights": "model.safetensors", "arch": "convnet"}, SimpleNamespace(**DIGITS),
                          str(tmp_path), "source")
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
