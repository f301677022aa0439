from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench.config import ConfigError, load_recipe, recipe_sha256, run_config_sha256
from tests.conftest import SMOKE


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_smoke_recipe_loads_and_is_readonly():
    cfg = load_recipe(SMOKE)
    assert cfg.data.name == "digits" and cfg.zoo.name == "smoke"
    assert cfg.tracking.wandb.dir == cfg.paths.cache_dir  # interpolation resolved
    from omegaconf.errors import ReadonlyConfigError

    with pytest.raises(ReadonlyConfigError):
        cfg.seed = 3


def test_merge_order_defaults_include_recipe_cli(tmp_path):
    write(tmp_path / "base.yaml", "seed: 1\nzoo: {name: base, source: {epochs: 4, batch_size: 32}}\n")
    recipe = write(tmp_path / "r.yaml", "include: base.yaml\nzoo: {source: {epochs: 5}}\n")
    cfg = load_recipe(recipe, ["zoo.source.epochs=6"])
    assert cfg.seed == 1  # include beats the default
    assert cfg.zoo.source.batch_size == 32  # include kept where the recipe is silent
    assert cfg.zoo.source.epochs == 6  # command line beats recipe beats include
    assert cfg.zoo.source.optimizer.momentum == 0.9  # dataclass default


def test_nested_include_relative_to_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "inner.yaml", "zoo: {name: inner}\n")
    write(tmp_path / "sub" / "mid.yaml", "include: inner.yaml\nseed: 7\n")
    cfg = load_recipe(write(tmp_path / "r.yaml", "include: [sub/mid.yaml]\n"))
    assert (cfg.zoo.name, cfg.seed) == ("inner", 7)


def test_include_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "include: b.yaml\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_unknown_key_names_it_and_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_recipe(SMOKE, ["zoo.sourse.epochs=3"])
    message = str(err.value)
    assert "sourse" in message and "source" in message and "negatives" in message


def test_wrong_type_names_field_and_type():
    with pytest.raises(ConfigError) as err:
        load_recipe(SMOKE, ["zoo.source.epochs=many"])
    assert "epochs" in str(err.value) and "int" in str(err.value).lower()


def test_missing_required_zoo_name(tmp_path):
    with pytest.raises(ConfigError, match="zoo.name"):
        load_recipe(write(tmp_path / "r.yaml", "seed: 0\n"))


def test_method_selection_and_did_you_mean():
    cfg = load_recipe(SMOKE, ["methods=[akh]"])
    assert [m["name"] for m in cfg.methods] == ["akh"]
    with pytest.raises(ConfigError, match="Did you mean 'akh'"):
        load_recipe(SMOKE, ["methods=[ahk]"])


def test_registered_method_not_in_recipe_runs_with_defaults():
    cfg = load_recipe(SMOKE, ["methods=[oracle_label]"])
    assert cfg.methods == [{"name": "oracle_label"}]


def test_per_method_override_and_validation():
    cfg = load_recipe(SMOKE, ["methods=[akh]", "methods.akh.n_samples=7"])
    assert cfg.methods[0]["n_samples"] == 7
    with pytest.raises(ConfigError, match="n_samples"):
        load_recipe(SMOKE, ["methods=[akh]", "methods.akh.n_samples=0"])
    with pytest.raises(ConfigError, match="n_sample"):
        load_recipe(SMOKE, ["methods=[akh]", "methods.akh.n_sample=3"])


def test_wandb_agent_style_overrides_are_accepted():
    cfg = load_recipe(SMOKE, ["--seed=5"])
    assert cfg.seed == 5


def test_hash_ignores_paths_tracking_compute_but_not_science():
    a = load_recipe(SMOKE)
    b = load_recipe(SMOKE, ["paths.zoo_dir=/elsewhere", "tracking.wandb.mode=offline", "compute.workers=3"])
    c = load_recipe(SMOKE, ["zoo.source.epochs=3"])
    assert recipe_sha256(a) == recipe_sha256(b) != recipe_sha256(c)


def test_run_hash_is_per_method():
    a = load_recipe(SMOKE, ["methods=[akh]"])
    b = load_recipe(SMOKE, ["methods=[akh,random]"])
    sha_a = run_config_sha256(a, OmegaConf.to_container(a.methods[0]))
    assert sha_a == run_config_sha256(b, OmegaConf.to_container(b.methods[0]))


def test_run_hash_ignores_display_and_extra_figures():
    """Progress bars and query budgets change no score: the result file keeps its name (published ones too)."""
    def digest(*overrides: str) -> str:
        cfg = load_recipe(SMOKE, ["methods=[akh]", *overrides])
        return run_config_sha256(cfg, OmegaConf.to_container(cfg.methods[0]))

    assert digest() == digest("eval.progress=false") == digest("eval.budgets=[]") == digest("eval.budgets=[5]")
    assert digest() != digest("eval.fpr_targets=[0.05]")


@pytest.mark.parametrize("override, needle", [
    ("compute.executor=slurm", "compute.executor"),
    ("tracking.wandb.mode=sometimes", "tracking.wandb.mode"),
    ("eval.fpr_targets=[0.01,1.5]", "fpr_targets"),
    ("data.name=digts", "Did you mean 'digits'"),
])
def test_bad_choices_are_named(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        load_recipe(SMOKE, [override])
