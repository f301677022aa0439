"""Every bad value refused at load (issue #24, item 5): non-finite numbers, absurd sizes, empty splits,
unknown timm params, null arch params and overrides of methods that do not run exit 2 through the CLI
naming the key, before anything is built; a training run that diverges is never recorded."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.cli import main
from bench.config import load_recipe
from bench.nets import build_model
from bench.recipe_checks import MAX_SIZE, implied_samples
from bench.training import (
    ClassifierModule,
    NonFiniteTrainingError,
    OptimizerConfig,
    ScheduleConfig,
    TrainerConfig,
    check_finite_model,
    fit,
)
from bench.zoo.plan import check_splits_not_empty
from bench.zoo.store import ZooStore
from tests.conftest import SMOKE, smoke_overrides
from tests.test_validation import _refused

TINY_ZOO = ["zoo.negatives=[]", "zoo.positives=[]", "methods=[akh]"]  # the source alone
TIMM = ["zoo.source.arch=timm:resnet18", *TINY_ZOO]

# (overrides, a fragment the one error line must contain)
REFUSED = [
    # non-finite numbers, wherever they are
    (["zoo.source.optimizer.lr=.inf"], "zoo.source.optimizer.lr=inf is not a finite number"),
    (["zoo.source.optimizer.lr=-.inf"], "zoo.source.optimizer.lr=-inf is not a finite number"),
    (["zoo.source.optimizer.momentum=.nan"], "zoo.source.optimizer.momentum=nan is not a finite number"),
    (["eval.bootstrap.confidence=nan"], "eval.bootstrap.confidence=nan is not a finite number"),
    (["zoo.positives=[{attack: ftal, epochs: 1, optimizer: {lr: .inf}}]"],
     "zoo.positives[0].optimizer.lr=inf is not a finite number"),
    (["zoo.negatives=[{kind: SAST, seed: 1, optimizer: {lr: .nan}}]"], "zoo.negatives[0].optimizer.lr=nan"),
    (["methods=[adv_tra]", "methods.adv_tra.brake_factor=.inf"], "methods.adv_tra.brake_factor=inf is not a finite"),
    (["methods=[akh]", "methods.akh.n_samples=.nan"], "methods.akh.n_samples=nan is not a finite number"),
    (["methods=[{name: cae, eps: 0.1}]"], "selects methods by name (methods=[adv_tra,ipguard]); set a parameter with"),
    # sizes: an absolute bound, and the memory the samples take
    (["methods=[akh]", "methods.akh.n_samples=1000000000000"],
     f"akh.n_samples=1000000000000 is above fpbench's bound on any method size, {MAX_SIZE:,}"),
    (["methods=[adv_tra]", "methods.adv_tra.n_fingerprints=9223372036854775807"],
     "adv_tra.n_fingerprints=9223372036854775807 is above fpbench's bound"),
    (["methods=[uap]", "methods.uap.cluster_samples=20000000"], "uap.cluster_samples=20000000 is above"),
    (["methods=[metav]", "methods.metav.hidden=[64,100000000]"], "metav.hidden[1]=100000000 is above"),
    (["methods=[akh]", "methods.akh.n_samples=5000000", "compute.max_sample_memory_gb=1"],
     "akh.n_samples=5000000 asks for 5,000,000 images of 1x8x8 float32 at once = 1.2 GiB, above the cap of 1.0 GiB "
     "from compute.max_sample_memory_gb. Fix: lower akh.n_samples"),
    (["methods=[adv_tra]", "methods.adv_tra.n_fingerprints=3000000", "compute.max_sample_memory_gb=1"],
     "adv_tra.n_fingerprints=3000000 x 4 (half_length=2, twice) asks for 12,000,000 images"),
    (["compute.max_sample_memory_gb=0"], "compute.max_sample_memory_gb=0.0 must be > 0"),
    # empty splits the recipe needs
    (["data.splits.test=0"], "data.splits.test=0 leaves the test split empty, but every zoo model's test accuracy"),
    (["data.splits.owner=0"], "data.splits.owner=0 leaves the owner split empty, but the source trains on it"),
    (["data.splits.attacker=0"], "data.splits.attacker=0 leaves the attacker split empty, but zoo.positives[0] (ftll)"),
    (["data.splits.independent=0"], "data.splits.independent=0 leaves the independent split empty, but "
                                    "zoo.negatives[1] (kind SADT)"),
    (["data.splits.independent=0", "zoo.positives=[{attack: ftal, split: independent}]", "zoo.negatives=[]"],
     "zoo.positives[0] (ftal) trains on it"),
    # null arch params (timm drops them, the model id would hash them)
    (["zoo.source.arch_params={width: null}"], "zoo.source.arch_params.width is null"),
    ([*TIMM, "zoo.source.arch_params={drop_rate: null}"], "zoo.source.arch_params.drop_rate is null"),
    (["zoo.negatives=[{kind: DAST, arch: mlp, seed: 1, arch_params: {depth: null}}]"],
     "zoo.negatives[0].arch_params.depth is null"),
    # overrides of a method that does not run
    (["methods=[akh]", "methods.ipguard.n_fingerprints=5"],
     "Override 'methods.ipguard.n_fingerprints=5' sets a parameter of 'ipguard', which does not run: the methods that "
     "run are akh. Fix: select it too (methods=[akh,ipguard])"),
    (["methods=[akh]", "methods.ipguard.n_samples=5"], "sets a parameter of 'ipguard', which does not run"),
    (["methods.cort.n_seeds=5"], "sets a parameter of 'cort', which does not run"),
]


@pytest.mark.parametrize("overrides, fragment", REFUSED, ids=[" ".join(o)[:70] for o, _ in REFUSED])
def test_bad_value_exits_2_naming_it_before_any_work(tmp_path, capsys, overrides, fragment):
    root = tmp_path / "out"
    assert fragment in _refused(["run", str(SMOKE), *smoke_overrides(root), *overrides], root, capsys)


def test_unknown_timm_param_fails_zoo_list_naming_it(tmp_path, capsys):
    root = tmp_path / "out"
    err = _refused(["zoo", str(SMOKE), *smoke_overrides(root), *TIMM, "zoo.source.arch_params={drop_rat: 0.1}",
                    "--list"], root, capsys)
    assert "unknown arch param(s) ['drop_rat'] for timm's resnet18" in err and "drop_rate" in err  # the accepted ones


def test_known_timm_param_is_planned(tmp_path, capsys):
    root = tmp_path / "out"
    code = main(["zoo", str(SMOKE), *smoke_overrides(root), *TIMM, "zoo.source.arch_params={drop_rate: 0.1}", "--list"])
    assert code == 0, capsys.readouterr().err
    assert "timm:resnet18" in capsys.readouterr().out


@pytest.mark.parametrize("overrides", [
    ["data.splits.independent=0", "zoo.negatives=[{kind: SAST, seed: 1}, {kind: DAST, arch: mlp, seed: 1}]"],
    ["data.splits.attacker=0", "zoo.positives=[{attack: quantize, dtype: int8}, {attack: prune, rate: 0.2, epochs: 0}]"],
    ["methods=[akh]", "methods.akh.n_samples=1000000", "compute.max_sample_memory_gb=1"],  # 0.24 GiB of 8x8 images
])
def test_what_is_not_needed_or_fits_is_accepted(overrides):
    """An empty split nothing reads (checked at planning), and a size below both bounds, load."""
    check_splits_not_empty(load_recipe(SMOKE, overrides))


def test_implied_samples_counts_the_largest_count_times_the_item_length():
    assert implied_samples({"n_fingerprints": 100, "candidates": 300, "half_length": 3, "max_iterations": 9}) == (
        1800, "candidates=300 x 6 (half_length=3, twice)")
    assert implied_samples({"max_steps": 10**6}) == (0, "")  # steps are time, not memory


# -- training that diverges is never recorded ---------------------------------------------------------------

def _tiny_fit(model: nn.Module, tmp_path) -> float:
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    module = ClassifierModule(model, OptimizerConfig(lr=0.01), ScheduleConfig(name="none"), epochs=1)
    trainer = TrainerConfig(accelerator="cpu", devices=1, enable_progress_bar=False)
    return fit(module, DataLoader(TensorDataset(x, y), batch_size=8), trainer, root_dir=str(tmp_path), seed=0)


def _digits_model() -> nn.Module:
    return build_model("mlp", in_channels=1, num_classes=10, image_size=8, mean=[0.5], std=[0.25], seed=0)


def test_a_non_finite_loss_stops_training(tmp_path):
    model = _digits_model()
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    with pytest.raises(NonFiniteTrainingError, match=r"the training loss is nan at epoch 0, batch 0 .*lr 0.01"):
        _tiny_fit(model, tmp_path)
    assert _tiny_fit(_digits_model(), tmp_path) >= 0  # a finite model trains


def test_non_finite_weights_are_named():
    model = _digits_model()
    check_finite_model(model)
    with torch.no_grad():
        model.head.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteTrainingError, match="the source has non-finite values .* in 'head.weight'"):
        check_finite_model(model, "the source")


def _diverging_build(tmp_path, monkeypatch, capsys, patch) -> tuple[int, str, ZooStore]:
    """`fpbench zoo` of the source alone with `patch` applied; returns (exit code, stderr, the zoo)."""
    patch(monkeypatch)
    root = tmp_path / "out"
    overrides = [*smoke_overrides(root), *TINY_ZOO, "zoo.source.epochs=1"]
    code = main(["zoo", str(SMOKE), *overrides])
    return code, capsys.readouterr().err, ZooStore(root / "zoo" / "smoke")


def test_a_diverging_source_fails_the_build_and_is_not_recorded(tmp_path, monkeypatch, capsys):
    def infinite_loss(monkeypatch):
        original = ClassifierModule._loss
        monkeypatch.setattr(ClassifierModule, "_loss", lambda self, logits, target: original(self, logits, target) * float("inf"))

    code, err, store = _diverging_build(tmp_path, monkeypatch, capsys, infinite_loss)
    assert code == 1, err
    assert "NonFiniteTrainingError: source " in err and "(train(convnet,digits:owner,seed=0,epochs=1))" in err
    assert "the training loss is inf at epoch 0, batch 0" in err and "the manifest does not record it" in err
    assert store.records() == {} and not list(store.root.rglob("*.safetensors"))


def test_non_finite_weights_after_training_are_not_recorded(tmp_path, monkeypatch, capsys):
    def nan_weights(monkeypatch):
        def poisoned_fit(module, *args, **kwargs):
            with torch.no_grad():
                next(module.model.parameters()).fill_(float("nan"))
            return 0.0

        monkeypatch.setattr("bench.zoo.jobs.fit", poisoned_fit)

    code, err, store = _diverging_build(tmp_path, monkeypatch, capsys, nan_weights)
    assert code == 1, err
    assert "non-finite values (inf or nan) in 'features." in err and "give this model a lower lr" in err
    assert store.records() == {}


def test_the_record_writer_refuses_a_non_finite_model(tmp_path):
    """`finish_record` (every executor's last step before the manifest) checks the weights itself."""
    from bench.zoo.jobs import finish_record, setup_datamodule
    from bench.zoo.plan import plan_zoo

    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), *TINY_ZOO])
    dm = setup_datamodule(cfg)
    plan = plan_zoo(cfg, dm.split_hashes())
    store = ZooStore(tmp_path / "zoo")
    model = _digits_model()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteTrainingError, match=f"source {plan.source.model_id} .* in 'head.bias'"):
        finish_record(plan.source, model, {}, 0.0, dm, store, plan)
    assert store.records() == {} and not store.checkpoint_path(plan.source.model_id).exists()
