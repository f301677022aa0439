"""Validation before compute (issue #16, items 3-6): a corpus of malformed overrides, recipes and
sweep files run through the CLI. Each must exit 2 with one message naming the problem, before any
model is trained and without writing a file (docs/decisions.md, "Validation bounds")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.config import ConfigError, load_recipe
from bench.training import MAX_EPOCHS, PRECISIONS, SEED_MAX, check_seed
from bench.zoo.plan import plan_zoo
from tests.conftest import SMOKE, smoke_overrides

HASHES = {"owner": "o", "attacker": "a", "independent": "i", "test": "t"}  # planning needs names, not data

# (overrides, a fragment the error message must contain)
CORPUS = [
    # item 3: refused only after work had started
    (["zoo.source.batch_size=0"], "zoo.source.batch_size=0 must be >= 1"),
    (["compute.trainer.accelerator=tpuu"], "compute.trainer.accelerator='tpuu' is not one of auto, gpu, cpu"),
    (["eval.device=bogus"], "eval.device='bogus' is not a device name"),
    (["eval.device=meta"], "device type 'meta' is not one of cpu, cuda, mps"),
    (["eval.device=cuda:99"], "eval.device='cuda:99', but this machine has"),
    (["eval.query_batch_size=0"], "eval.query_batch_size=0 must be >= 1"),
    (["eval.bootstrap.n=-1"], "eval.bootstrap.n=-1 must be in [0, 1000000]"),
    (["eval.bootstrap.n=1000000000000"], "eval.bootstrap.n=1000000000000 must be in [0, 1000000]"),
    (["eval.bootstrap.confidence=1.5"], "eval.bootstrap.confidence=1.5 must be in (0, 1)"),
    (["data.splits.owner=-1"], "data.splits.owner=-1.0 is invalid"),
    (["data.splits.owner=5000"], "data.splits ask for owner=5000 + attacker=300 + independent=400"),
    (["data.splits.owner=700.5"], "data.splits.owner=700.5: values >= 1 are sample counts"),
    (["data.splits.owner=0.0001"], "data.splits.owner=0.0001 of digits's pool of 1797 gives 0 samples"),
    (["data.splits.owner=1097"], "leave none for test"),
    # item 4: accepted silently
    (["eval.fpr_targets=[]"], "eval.fpr_targets is empty"),
    (["data.batch_size=0"], "data.batch_size=0 must be >= 1"),
    (["zoo.source.epochs=100000000"], f"zoo.source.epochs=100000000 must be <= {MAX_EPOCHS}"),
    (["seed=9223372036854775808"], f"seed=9223372036854775808 must be an integer in [0, {SEED_MAX}]"),
    # item 5: unparseable overrides and keys
    (["zoo.source.epochs=[1,2"], "Cannot parse override 'zoo.source.epochs=[1,2'"),
    (["methods=[akh,sac"], "Cannot parse override 'methods=[akh,sac'"),
    (["methods.akh.n_samples=[3"], "Cannot parse override 'methods.akh.n_samples=[3'"),
    (["=5"], "Override '=5' has no key before '='"),
    (["zoo..source=3"], "key 'zoo..source' has an empty part"),
    (["zoo.source.=3"], "key 'zoo.source.' has an empty part"),
    (["zoo.sourse.epochs=3"], "Unknown key 'sourse' (at 'zoo.sourse') in override 'zoo.sourse.epochs=3'"),
    # zoo entries, checked by the planner once resolved (before any training)
    (["zoo.negatives=[{kind: SAST, seed: 1, epochs: 20000}]"], "zoo.negatives[0].epochs=20000 must be <= 10000"),
    (["zoo.negatives=[{kind: SADT, seed: 1, batch_size: 0}]"], "zoo.negatives[0].batch_size=0 must be >= 1"),
    (["zoo.negatives=[{kind: DAST, arch: lenet, seed: -3}]"], "zoo.negatives[0].seed=-3 must be an integer"),
    (["zoo.positives=[{attack: ftal, epochs: 20000}]"], "ftal.epochs=20000 must be <= 10000"),
    (["zoo.positives=[{attack: ftal, seed: 9999999999}]"], "zoo.positives[0] (ftal).seed=9999999999"),
    # adaptive attacks (issue #19, item 2)
    (["zoo.positives=[{attack: ftsmooth, smoothing: 0, mixup_alpha: 0}]"], "ftsmooth.smoothing=0.0 must be > 0 when"),
    (["zoo.positives=[{attack: ftsmooth, smoothing: 1.5}]"], "ftsmooth.smoothing=1.5 must be in [0, 1)"),
    (["zoo.positives=[{attack: ftsmooth, mixup_alfa: 0.4}]"], "Did you mean 'mixup_alpha'?"),
    (["zoo.positives=[{attack: ftsmoth}]"], "Did you mean 'ftsmooth'?"),
    (["zoo.positives=[{attack: extract, query_data: noise}]"], "extract.query_data='noise' is not one of attacker"),
    (["zoo.positives=[{attack: extract, query_dat: synthetic}]"], "Did you mean 'query_data'?"),
    (["methods=[cae]", "methods.cae.pool_seeds=2", f"zoo.pool_seed_offset={SEED_MAX}"],
     f"pool reference (convnet).seed={SEED_MAX + 1}"),
    (["methods=[cae]", "methods.cae.pool_epochs=20000"], "cae.pool_epochs=20000 must be <= 10000"),
    (["methods=[uap]", "methods.uap.surrogate_epochs=0"], "uap.surrogate_epochs=0 must be >= 1"),
    # per-method overrides of a method that does not run
    (["methods=[akh]", "methods.oracle_label.seed=1"],
     "Override 'methods.oracle_label.seed=1' sets a parameter of 'oracle_label', which does not run: the methods "
     "that run are akh"),
    (["methods.oracle_label.seed=1"], "the methods that run are adv_tra, ipguard, cae, uap, sac, akh, random"),
    (["methods=[adv_tra]", "methods.adv_tra.n_fingerprint=3"], "Unknown key 'n_fingerprint'"),
    (["methods=[akh]", "methods.adv_tra.n_fingerprints=3"],
     "sets a parameter of 'adv_tra', which does not run: the methods that run are akh. Fix: select it too "
     "(methods=[akh,adv_tra])"),
    # our own
    (["methods=[akh]", "methods.akh.seed=-1"], "akh.seed=-1 must be an integer"),
    (["eval.fpr_targets=[0.1,0.1]"], "lists a target twice"),
    (["eval.budgets=[10,0]"], "eval.budgets=[10, 0] must be a list of positive whole numbers"),
    (["eval.budgets=[10,10]"], "eval.budgets=[10, 10] must be a list that names each budget once"),
    (["eval.budgets=[all]"], "eval.budgets"),
    (["seed=4294967295", "trials.count=2"], "the last trial's seed, trials.count=2)=4294967296"),
    (["zoo.split_seed=4294967296"], "zoo.split_seed=4294967296"),
    (["eval.bootstrap.seed=-5"], "eval.bootstrap.seed=-5"),
    (["compute.trainer.strategy=dpp"], "compute.trainer.strategy='dpp' is not one of auto, ddp"),
    (["compute.trainer.precision=17"], "compute.trainer.precision='17' is not one of"),
    (["compute.trainer.num_nodes=0"], "compute.trainer.num_nodes=0 must be >= 1"),
    (["compute.resources.gpus=-1"], "compute.resources.gpus=-1.0 must be >= 0"),
    (["data.num_workers=-1"], "data.num_workers=-1 must be >= 0"),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0 must be >= 1"),
    (["zoo.source.optimizer.lr=0"], "zoo.source.optimizer.lr=0.0 must be > 0"),
    (["zoo.source.epochs"], "Override 'zoo.source.epochs' is not key=value"),
]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _refused(argv: list[str], root: Path, capsys: pytest.CaptureFixture) -> str:
    """Run the CLI; assert exit 2, one `fpbench: error:` line and nothing written under `root`."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("fpbench: error: ") and err.count("fpbench: error:") == 1
    assert _files(root) == [] and not (root / "zoo").exists() and not (root / "results").exists()
    return err


@pytest.mark.parametrize("overrides, fragment", CORPUS, ids=[" ".join(o)[:60] for o, _ in CORPUS])
def test_malformed_override_exits_2_naming_it_and_writes_nothing(tmp_path, capsys, overrides, fragment):
    root = tmp_path / "out"
    err = _refused(["run", str(SMOKE), *smoke_overrides(root), *overrides], root, capsys)
    assert fragment in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so the request is valid")
@pytest.mark.parametrize("override, fragment", [
    ("eval.device=cuda", "eval.device='cuda', but this machine has no CUDA device"),
    ("compute.trainer.accelerator=cuda", "compute.trainer.accelerator='cuda': no such device on this machine"),
    ("compute.trainer.accelerator=gpu", "compute.trainer.accelerator='gpu': no such device on this machine"),
])
def test_cuda_requested_without_cuda_exits_2(tmp_path, capsys, override, fragment):
    root = tmp_path / "out"
    assert fragment in _refused(["run", str(SMOKE), *smoke_overrides(root), override], root, capsys)


def test_ray_workers_may_have_a_gpu_the_driver_lacks():
    cfg = load_recipe(SMOKE, ["compute.executor=ray", "compute.trainer.accelerator=cuda"])
    assert cfg.compute.trainer.accelerator == "cuda"


BAD_RECIPES = [
    ("zoo: {name: x\n", "Cannot parse recipe"),
    ("- a\n- b\n", "must be a YAML mapping at top level, got a ListConfig"),
    ("include: missing.yaml\n", "Recipe file not found"),
    (f"include: {SMOKE}\nzoo: {{source: {{epochs: -1}}}}\n", "zoo.source.epochs=-1 must be >= 0"),
    (f"include: {SMOKE}\neval: {{fpr_targets: []}}\n", "eval.fpr_targets is empty"),
    (f"include: {SMOKE}\nzoo: {{negatives: [{{kind: DADT, arch: mlp, seed: 1, epochs: 99999}}]}}\n",
     "zoo.negatives[0].epochs=99999"),
    (f"include: {SMOKE}\nmethods: [{{name: cae, pool_epochs: 0}}]\n", "cae.pool_epochs=0"),
]


@pytest.mark.parametrize("text, fragment", BAD_RECIPES, ids=[f for _, f in BAD_RECIPES])
def test_malformed_recipe_file_exits_2(tmp_path, capsys, text, fragment):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    root = tmp_path / "out"
    assert fragment in _refused(["run", str(recipe), *smoke_overrides(root)], root, capsys)


BAD_SWEEPS = [
    ("recipe: smoke.yaml\nparameters: {seed: [0, 1]\n", "Cannot parse sweep"),
    ("- recipe\n", "must be a YAML mapping at top level, got a list"),
    ("recipe: SMOKE\nparameters: [seed]\n", "'parameters:' in sweep"),
    ("recipe: [SMOKE]\nparameters: {seed: [0]}\n", "'recipe:' in sweep"),
    ("recipe: SMOKE\nparameters: {seed: [0]}\nn: ten\n", "n='ten' in sweep"),
    ("recipe: SMOKE\nparameters: {seed: [0]}\noverrides: zoo.source.epochs=1\n", "'overrides:' in sweep"),
    ("recipe: SMOKE\nparameters: {zoo.source.epochs: [1, 100000]}\n", "zoo.source.epochs=100000 must be <= 10000"),
    ("recipe: SMOKE\nparameters: {seed: [0, 1]}\noverrides: ['zoo.source.epochs=[1']\n",
     "Cannot parse override 'zoo.source.epochs=[1'"),
]


@pytest.mark.parametrize("text, fragment", BAD_SWEEPS, ids=[f for _, f in BAD_SWEEPS])
def test_malformed_sweep_file_exits_2(tmp_path, capsys, text, fragment):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(text.replace("SMOKE", str(SMOKE)))
    root = tmp_path / "out"
    assert fragment in _refused(["sweep", str(sweep), *smoke_overrides(root)], root, capsys)


def test_override_of_a_method_the_selection_drops_is_refused():
    """The recipe configures adv_tra, the selection drops it: its override would change nothing (issue #24)."""
    with pytest.raises(ConfigError, match=r"'adv_tra', which does not run.*methods=\[akh,adv_tra\]"):
        load_recipe(SMOKE, ["methods=[akh]", "methods.adv_tra.n_fingerprints=3"])
    cfg = load_recipe(SMOKE, ["methods=[akh,adv_tra]", "methods.adv_tra.n_fingerprints=3"])
    assert [(m["name"], m.get("n_fingerprints")) for m in cfg.methods] == [("akh", None), ("adv_tra", 3)]


def test_da_negative_starts_from_its_own_architectures_params():
    """Item 6: the source's arch_params do not leak into a DA* negative of another architecture
    (a refusal when that architecture lacks the key, a silently different model when it has it)."""
    plan = plan_zoo(load_recipe(SMOKE, ["zoo.source.arch_params={width: 16}"]), HASHES)
    negatives = {(j.kind, j.arch): j.arch_params for j in plan.by_role("negative")}
    assert negatives[("SAST", "convnet")] == negatives[("SADT", "convnet")] == {"width": 16}
    assert negatives[("DAST", "lenet")] == negatives[("DADT", "mlp")] == {}
    plan = plan_zoo(load_recipe(SMOKE, ["zoo.source.arch_params={hidden: 32}"]), HASHES)
    assert {j.arch: j.arch_params for j in plan.by_role("negative") if j.kind == "DAST"} == {"lenet": {}, "mlp": {}}
    own = load_recipe(SMOKE, ["zoo.source.arch_params={hidden: 32}",
                              "zoo.negatives=[{kind: DAST, arch: mlp, seed: 1, arch_params: {depth: 3}}]"])
    assert plan_zoo(own, HASHES).by_role("negative")[0].arch_params == {"depth": 3}


def test_valid_bounds_are_accepted():
    cfg = load_recipe(SMOKE, [f"seed={SEED_MAX}", f"zoo.source.epochs={MAX_EPOCHS}", "eval.bootstrap.n=0",
                              "data.splits.owner=0.4", "data.splits.attacker=0.1", "data.splits.independent=0.3",
                              "eval.device=cpu", "compute.trainer.accelerator=cpu", "compute.trainer.precision=bf16-mixed"])
    assert cfg.seed == SEED_MAX and cfg.eval.bootstrap.n == 0
    check_seed("s", 0)
    with pytest.raises(ValueError, match="must be an integer"):
        check_seed("s", True)


def test_precision_names_match_lightnings():
    """PRECISIONS is a copy of Lightning's accepted strings; this catches an upgrade that changes them."""
    from typing import get_args

    from lightning_fabric.plugins.precision.precision import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS

    assert set(PRECISIONS) == {*get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS)}
