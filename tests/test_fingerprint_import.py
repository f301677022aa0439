"""External fingerprints (docs/byo.md): import checks, the cache entry, and scoring through the loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.config import load_recipe
from bench.evaluate import run_benchmark
from bench.fingerprint_import import IMPORT_FORMATS
from bench.report.variants import variant_label
from bench.verification import load_fingerprint
from tests.conftest import SMOKE, smoke_overrides

SMALL_ADV_TRA = ["methods=[adv_tra]", "methods.adv_tra.n_fingerprints=4", "methods.adv_tra.candidates=12",
                 "methods.adv_tra.classes_spanned=3"]


def _one_result(outcome):
    (path, result), = outcome.results.items()
    return path, result


@pytest.fixture(scope="module")
def adv_run(smoke_cfg, smoke_zoo, tmp_path_factory):
    """A small ADV-TRA run on the session's smoke zoo, with its own cache and results."""
    work = tmp_path_factory.mktemp("adv_import")
    overrides = [*smoke_overrides(Path(smoke_cfg.paths.zoo_dir).parent), f"paths.cache_dir={work / 'cache'}",
                 f"paths.results_dir={work / 'results'}", *SMALL_ADV_TRA]
    path, result = _one_result(run_benchmark(load_recipe(SMOKE, overrides), progress=False))
    return work, overrides, path, result


def _write(folder: Path, inputs: np.ndarray, labels: np.ndarray) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "X.npy", inputs)
    np.save(folder / "Y.npy", labels)
    return folder / "X.npy", folder / "Y.npy"


def _import(overrides, x: Path, y: Path, method: str = "adv_tra") -> int:
    return main(["fingerprint", "import", str(SMOKE), *overrides, "--method", method, "--inputs", str(x), "--labels", str(y)])


def test_imported_fingerprint_scores_like_the_original(adv_run, capsys):
    work, overrides, path, original = adv_run
    fp = load_fingerprint(path, work / "cache").fingerprint
    x, y = _write(work / "export", fp.tensors["inputs"].numpy(), fp.tensors["labels"].numpy())
    assert _import(overrides, x, y) == 0
    import_id = next(w for w in capsys.readouterr().out.split() if w.startswith("imported-"))

    again = load_recipe(SMOKE, [*overrides, f"methods.adv_tra.fingerprint={import_id}"])
    _, imported = _one_result(run_benchmark(again, progress=False))
    assert [(r["model_id"], r["score"], r["queries"]) for r in imported["per_model"]] == \
           [(r["model_id"], r["score"], r["queries"]) for r in original["per_model"]]
    assert imported["metrics"]["auc"] == original["metrics"]["auc"]
    assert imported["config_sha256"] != original["config_sha256"]  # its own result file and leaderboard row
    assert imported["fingerprint"]["imported"] is True and imported["fingerprint"]["generation_target"] is None
    assert imported["fingerprint"]["inputs_sha256"] != imported["fingerprint"]["labels_sha256"]
    assert f"fingerprint={import_id}" in variant_label("adv_tra", imported["method"]["config"], "x")

    # The loop scores the imported arrays, not a regenerated fingerprint: other labels, other mutation rates.
    x2, y2 = _write(work / "shifted", fp.tensors["inputs"].numpy(), (fp.tensors["labels"].numpy() + 1) % 10)
    assert _import(overrides, x2, y2) == 0
    shifted_id = next(w for w in capsys.readouterr().out.split() if w.startswith("imported-"))
    assert shifted_id != import_id
    _, shifted = _one_result(run_benchmark(load_recipe(SMOKE, [*overrides, f"methods.adv_tra.fingerprint={shifted_id}"]),
                                           progress=False))
    for a, b in zip(original["per_model"], shifted["per_model"], strict=True):
        assert b["extras"]["mean_mutation_rate"] != a["extras"]["mean_mutation_rate"]


def _arrays(shape=(3, 5, 1, 8, 8), classes=10):
    rng = np.random.default_rng(0)
    return rng.random(shape, dtype=np.float32), rng.integers(0, classes, shape[:2])


def _bad_cases():
    x, y = _arrays()
    nan = x.copy()
    nan[0, 0, 0, 0, 0] = np.nan
    return {
        "rank": (x[:, 0], y),  # [N, C, H, W] for a trajectory method
        "class range": (x, np.full_like(y, 10)),
        "negative class": (x, np.full_like(y, -1)),
        "nan": (nan, y),
        "chw": (_arrays((3, 5, 3, 8, 8))[0], y),
        "hw": (_arrays((3, 5, 1, 28, 28))[0], y),
        "pixel range": (x * 255, y),
        "float labels": (x, y.astype(np.float32)),
        "mismatched n": (x, y[:2]),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_arrays_exit_2_and_write_nothing(case, tmp_path, capsys):
    x, y = _bad_cases()[case]
    xf, yf = _write(tmp_path / "in", x, y)
    assert _import(smoke_overrides(tmp_path), xf, yf) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_truncated_and_wrong_type_files_exit_2(tmp_path, capsys):
    xf, yf = _write(tmp_path / "in", *_arrays())
    xf.write_bytes(xf.read_bytes()[:200])  # cut short
    assert _import(smoke_overrides(tmp_path), xf, yf) == 2
    assert "cannot be read" in capsys.readouterr().err
    other = tmp_path / "in" / "X.txt"
    other.write_text("1 2 3")
    assert _import(smoke_overrides(tmp_path), other, yf) == 2
    assert _import(smoke_overrides(tmp_path), *_write(tmp_path / "ok", *_arrays()), method="sac") == 2
    assert not (tmp_path / "cache").exists()


def test_point_methods_take_rank_4_inputs(tmp_path, capsys):
    x, y = _arrays()
    assert set(IMPORT_FORMATS) == {"adv_tra", "ipguard", "akh", "cae"}
    assert _import(smoke_overrides(tmp_path), *_write(tmp_path / "in", x[:, 0], y[:, 0]), method="ipguard") == 0
    import_id = next(w for w in capsys.readouterr().out.split() if w.startswith("imported-"))
    assert (tmp_path / "cache" / "fingerprints" / "ipguard" / import_id / "sha256.json").is_file()


@pytest.mark.parametrize("value", ["imported-0000000000000000", "not-an-id"])
def test_run_with_a_missing_or_malformed_import_exits_2_before_the_zoo(value, tmp_path, capsys):
    code = main(["run", str(SMOKE), *smoke_overrides(tmp_path), "methods=[adv_tra]", f"methods.adv_tra.fingerprint={value}"])
    assert code == 2
    assert "imported" in capsys.readouterr().err
    assert not (tmp_path / "zoo").exists()


def test_a_method_that_cannot_import_is_refused_at_load(tmp_path):
    with pytest.raises(Exception, match="cannot score an imported fingerprint"):
        load_recipe(SMOKE, [*smoke_overrides(tmp_path), "methods=[sac]", "methods.sac.fingerprint=imported-0000000000000000"])
