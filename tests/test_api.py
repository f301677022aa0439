"""The Python API (bench.api, re-exported lazily by `bench`) and the end-to-end example on digits."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, smoke_overrides

EXAMPLE = REPO / "docs" / "examples" / "digits_end_to_end.py"


def test_import_bench_is_cheap_and_names_resolve_to_the_api():
    code = ("import sys, bench; assert 'torch' not in sys.modules, 'import bench loaded torch'; "
            "import bench.evaluate, bench.verification; "  # submodules loaded first must not hide the API
            "assert callable(bench.verify) and callable(bench.benchmark) and callable(bench.fingerprint); "
            "assert bench.verify.__module__ == 'bench.api'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_unknown_attribute_is_an_attribute_error():
    import bench

    with pytest.raises(AttributeError, match="no attribute 'evaluat'"):
        bench.evaluat  # noqa: B018


def test_example_runs_end_to_end(smoke_cfg, smoke_zoo, tmp_path, monkeypatch, capsys):
    # The session's smoke zoo stands in for the example's own build (same recipe, so build_zoo reuses it).
    root = Path(smoke_cfg.paths.zoo_dir).parent
    argv = ["--workdir", str(tmp_path), f"paths.zoo_dir={root / 'zoo'}", f"paths.data_dir={root / 'data'}"]
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), *argv])
    namespace = runpy.run_path(str(EXAMPLE), run_name="example")
    outcome = namespace["main"](argv)
    out = capsys.readouterr().out
    assert "akh" in out and "ipguard" in out and "queries" in out
    scores = outcome["scores"]
    assert set(scores["method"]) == {"akh", "ipguard"}
    n_suspects = len(smoke_zoo.plan.by_role("positive", "negative"))
    assert len(scores) == 2 * n_suspects
    for path, result in outcome["results"].items():
        assert Path(path).is_file() and str(tmp_path) in path  # results under the workdir
        rows = scores[scores["result"] == path]
        assert list(rows["score"]) == [r["score"] for r in result["per_model"]]
    decision = outcome["decision"]
    assert decision["decision"] == ("derived" if decision["score"] > decision["threshold"]["threshold"] else "independent")


def test_verify_with_an_oracle_counts_its_queries(smoke_cfg, smoke_zoo, tmp_path):
    import bench
    from bench.oracle import Oracle

    cfg = bench.load_recipe(REPO / "recipes" / "smoke.yaml", [*smoke_overrides(Path(smoke_cfg.paths.zoo_dir).parent)])
    fp = bench.fingerprint("akh", cfg, zoo=smoke_zoo)
    source = smoke_zoo.store.load_model(smoke_zoo.plan.source.model_id)
    oracle = Oracle(source, access="label")
    first = bench.verify(fp, oracle)
    assert first["score"] == 1.0 and first["decision"] is None  # the source agrees with itself; no calibration
    assert first["queries"] == oracle.queries == fp.meta["queries_per_suspect"]
    with pytest.raises(ValueError, match="cannot be scored"):
        bench.verify(fp, source, method="ipguard")
