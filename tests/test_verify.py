"""`fpbench verify`: one suspect scored with a result's fingerprint, decided at the calibrated threshold."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import save_file

from bench.cli import main
from bench.config import load_recipe
from bench.evaluate import run_benchmark
from bench.verification import VerifyError, calibrated_threshold
from tests.conftest import SMOKE, smoke_overrides


@pytest.fixture(scope="module")
def akh_run(smoke_cfg, smoke_zoo, tmp_path_factory):
    work = tmp_path_factory.mktemp("verify")
    overrides = [*smoke_overrides(Path(smoke_cfg.paths.zoo_dir).parent), f"paths.cache_dir={work / 'cache'}",
                 f"paths.results_dir={work / 'results'}", "methods=[akh]"]
    (path, result), = run_benchmark(load_recipe(SMOKE, overrides), progress=False).results.items()
    return work, Path(path), result


def _verify(akh_run, suspect: str, *extra: str) -> list[str]:
    work, path, _ = akh_run
    return ["verify", "--fingerprint", str(path), "--suspect", suspect, "--cache-dir", str(work / "cache"), *extra]


def _printed(out: str) -> dict[str, str]:
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in out.splitlines() if ":" in line}


def test_zoo_suspects_get_the_results_score_and_decision(akh_run, smoke_cfg, capsys):
    _, _, result = akh_run
    threshold = max(r["score"] for r in result["per_model"] if r["role"] == "negative")  # n_negative < 100: k = 0
    negatives = [r for r in result["per_model"] if r["role"] == "negative"]
    top_negative = max(negatives, key=lambda r: r["score"])  # scores exactly the threshold: INDEPENDENT (strict >)
    for record in [next(r for r in result["per_model"] if r["role"] == "positive"), top_negative]:
        assert main(_verify(akh_run, record["model_id"], "--zoo-dir", smoke_cfg.paths.zoo_dir)) == 0
        printed = _printed(capsys.readouterr().out)
        assert float(printed["score"]) == pytest.approx(record["score"], abs=1e-6)
        assert int(printed["queries"]) == record["queries"]
        assert float(printed["threshold"].split()[0]) == pytest.approx(threshold, abs=1e-6)
        expected = "DERIVED" if record["score"] > threshold else "INDEPENDENT"
        assert printed["decision"].split()[0] == expected


def test_weights_file_suspect_scores_like_its_zoo_model(akh_run, smoke_cfg, smoke_zoo, tmp_path, capsys):
    _, _, result = akh_run
    record = next(r for r in result["per_model"] if r["role"] == "positive")
    model = smoke_zoo.store.load_model(record["model_id"])
    weights = tmp_path / "suspect.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    arch = smoke_zoo.store.records()[record["model_id"]]["arch"]
    assert main(_verify(akh_run, str(weights), "--arch", arch)) == 0
    assert float(_printed(capsys.readouterr().out)["score"]) == pytest.approx(record["score"], abs=1e-6)


def test_bad_inputs_exit_2_before_any_query(akh_run, smoke_cfg, tmp_path, capsys):
    work, path, result = akh_run
    model_id = result["per_model"][0]["model_id"]
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    broken_result = tmp_path / "result.json"
    broken_result.write_text(json.dumps(result)[:300])
    cases = [
        _verify(akh_run, str(truncated), "--arch", "convnet"),  # truncated weights
        _verify(akh_run, str(truncated)),  # no --arch
        _verify(akh_run, "nosuchmodel", "--zoo-dir", smoke_cfg.paths.zoo_dir),  # unknown model id
        ["verify", "--fingerprint", str(broken_result), "--suspect", model_id],  # truncated result
        ["verify", "--fingerprint", str(path), "--suspect", model_id, "--cache-dir", str(tmp_path)],  # no cache
        _verify(akh_run, model_id, "--zoo-dir", smoke_cfg.paths.zoo_dir, "--fpr", "1.5"),
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert "error" in captured.err and "score:" not in captured.out


def test_calibrated_threshold_allows_floor_fpr_n_false_positives():
    negatives = [{"role": "negative", "score": s / 200} for s in range(200)]
    record = calibrated_threshold([*negatives, {"role": "positive", "score": 2.0}], fpr=0.01)
    assert record["threshold"] == pytest.approx(197 / 200)  # 2 of 200 allowed above it
    assert record["negatives_above"] == 2 and record["fpr_on_negatives"] <= 0.01
    small = calibrated_threshold(negatives[:10], fpr=0.01)
    assert small["threshold"] == pytest.approx(9 / 200) and small["negatives_above"] == 0
    assert calibrated_threshold(negatives[:1], fpr=0.999)["threshold"] == 0.0
    assert calibrated_threshold(negatives[:2], fpr=0.5)["threshold"] == 0.0
    with pytest.raises(VerifyError, match="no negatives"):
        calibrated_threshold([{"role": "positive", "score": 1.0}])
    assert not math.isinf(record["threshold"])


def test_callable_endpoint_suspect_scores_like_its_model(akh_run, smoke_zoo, tmp_path, monkeypatch, capsys):
    _, _, result = akh_run
    record = next(r for r in result["per_model"] if r["role"] == "positive")
    (tmp_path / "suspect_api.py").write_text(
        "import torch\nfrom bench.zoo.store import ZooStore\n"
        f"MODEL = ZooStore({str(smoke_zoo.store.root)!r}).load_model({record['model_id']!r})\n"
        "def predict(x):\n    with torch.no_grad():\n        return MODEL(x).argmax(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(_verify(akh_run, "py:suspect_api:predict")) == 0
    printed = _printed(capsys.readouterr().out)
    assert float(printed["score"]) == pytest.approx(record["score"], abs=1e-6)
    assert int(printed["queries"]) == record["queries"]  # the probe is not counted
    assert main(_verify(akh_run, "py:suspect_api:nothing_here")) == 2
