"""Tracking. Utility beside detection (issue #14 item 3): the W&B per-suspect table carries each
suspect's test accuracy, label agreement with the source and accuracy drop, and a plot shows score
against accuracy drop. Issue #15 item 13: the ROC as an interactive W&B plot of the stored points,
and every built zoo model as a W&B artifact with its lineage. W&B is disabled in tests; what the
library asks of W&B is checked through a recording fake of its public API."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.config import load_recipe
from bench.report.plots import has_accuracy, plot_score_vs_accuracy_drop, write_plots
from bench.results import result_path, write_result
from bench.tracking import (
    PER_MODEL_COLUMNS,
    log_result,
    log_zoo_model,
    model_artifact_name,
    per_model_table,
    roc_table,
)
from tests.conftest import SMOKE, smoke_overrides
from tests.test_results import synthetic_result
from tests.test_training import RecordingLogger


def with_accuracies(result: dict[str, Any]) -> dict[str, Any]:
    """Give every suspect a test accuracy and source agreement; positives lose accuracy with their index."""
    for i, record in enumerate(result["per_model"]):
        record["test_acc"] = round(0.9 - 0.01 * i, 4) if record["role"] == "positive" else 0.88
        record["source_agreement"] = 0.95 if record["role"] == "positive" else 0.8
    return result


def test_per_model_table_has_accuracy_agreement_and_drop():
    result = with_accuracies(synthetic_result())
    del result["per_model"][-1]["test_acc"]  # a zoo record without an accuracy: the cells stay empty
    columns, rows = per_model_table(result)
    assert columns[:5] == ["model_id", "role", "group", "score", "queries"]
    assert columns[5:] == ["test_acc", "source_agreement", "accuracy_drop"]
    assert len(rows) == len(result["per_model"])
    for row, record in zip(rows[:-1], result["per_model"][:-1], strict=True):
        cell = dict(zip(columns, row, strict=True))
        assert cell["model_id"] == record["model_id"] and cell["score"] == record["score"]
        assert cell["test_acc"] == record["test_acc"] and cell["source_agreement"] == record["source_agreement"]
        assert cell["accuracy_drop"] == pytest.approx(result["zoo"]["source_test_acc"] - record["test_acc"])
    last = dict(zip(columns, rows[-1], strict=True))
    assert last["test_acc"] is None and last["accuracy_drop"] is None and last["source_agreement"] == 0.8


def test_per_model_table_is_a_valid_wandb_table():
    wandb = pytest.importorskip("wandb")
    columns, rows = per_model_table(with_accuracies(synthetic_result()))
    table = wandb.Table(columns=columns, data=rows)
    assert table.columns == columns and len(table.data) == len(rows)


def test_score_vs_accuracy_drop_plot_written_beside_the_others(tmp_path: Path):
    from matplotlib.image import imread

    plain = synthetic_result("ipguard")
    assert not has_accuracy([plain])  # results from before suspects' accuracies were recorded
    write_result(plain, result_path(tmp_path, "tiny", "ipguard", plain["config_sha256"], 0))
    assert [p.name for p in write_plots(tmp_path)] == ["roc.png", "scores_box.png", "groups_heatmap.png"]
    for method in ("adv_tra", "akh"):
        result = with_accuracies(synthetic_result(method))
        write_result(result, result_path(tmp_path, "tiny", method, result["config_sha256"], 0))
    written = write_plots(tmp_path)
    plot = tmp_path / "plots" / "tiny" / "score_vs_accuracy_drop.png"
    assert plot in written and imread(plot).shape[0] > 100
    direct = plot_score_vs_accuracy_drop([with_accuracies(synthetic_result())], tmp_path / "one.png")
    assert direct.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- W&B through its public calls (issue #15 item 13) -------------------------------------------------
# A fake `wandb` module records what the library asks of W&B; no test reads W&B's own file formats.


class FakeArtifact:
    def __init__(self, name: str, type: str, description: str | None = None, metadata: dict | None = None) -> None:
        self.name, self.type, self.description, self.metadata = name, type, description, dict(metadata or {})
        self.files: list[str] = []
        self.references: list[tuple[str, str]] = []

    def add_file(self, path: str) -> None:
        self.files.append(path)

    def add_reference(self, uri: str, name: str | None = None) -> None:
        self.references.append((uri, name))


class FakeRun:
    def __init__(self, offline: bool = True, disabled: bool = False, **init_kwargs: Any) -> None:
        self.offline, self.disabled, self.init_kwargs = offline, disabled, init_kwargs
        self.summary: dict[str, Any] = {}
        self.logged: dict[str, Any] = {}
        self.artifacts: list[FakeArtifact] = []
        self.used: list[str] = []
        self.finished = False
        self.dir = "fake-run-dir"

    def log(self, data: dict[str, Any]) -> None:
        self.logged.update(data)

    def log_artifact(self, artifact: FakeArtifact) -> None:
        self.artifacts.append(artifact)

    def use_artifact(self, name: str, type: str | None = None) -> None:
        self.used.append(name)

    def finish(self) -> None:
        self.finished = True


class FakeWandb(types.ModuleType):
    """The slice of the `wandb` API that `bench.tracking` uses, recording every call."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.runs: list[FakeRun] = []
        self.Artifact = FakeArtifact
        self.Table = lambda columns=None, data=None, dataframe=None: {"columns": columns, "data": data}
        self.Image = lambda path: {"image": path}
        self.plot = types.SimpleNamespace(line=lambda table, x, y, title="": {"table": table, "x": x, "y": y, "title": title})

    def init(self, **kwargs: Any) -> FakeRun:
        self.runs.append(FakeRun(offline=kwargs.get("mode") != "online", **kwargs))
        return self.runs[-1]


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> FakeWandb:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def test_roc_table_is_the_stored_roc_points():
    result = synthetic_result()
    columns, rows = roc_table(result)
    assert columns == ["fpr", "tpr"]
    roc = result["metrics"]["roc"]
    assert rows == [[f, t] for f, t in zip(roc["fpr"], roc["tpr"], strict=True)] and len(rows) > 2
    assert rows[0] == [0.0, 0.0] and rows[-1] == [1.0, 1.0]


def test_log_result_logs_an_interactive_roc_from_the_stored_points(fake_wandb, tmp_path: Path):
    result = synthetic_result()
    path = result_path(tmp_path, "tiny", "adv_tra", result["config_sha256"], 0)
    write_result(result, path)
    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), "tracking.wandb.mode=offline"])
    assert log_result(cfg, result, path) == "fake-run-dir"
    (run,) = fake_wandb.runs
    assert run.init_kwargs["mode"] == "offline" and run.init_kwargs["dir"] == str(tmp_path / "cache")
    assert run.summary["auc"] == result["metrics"]["auc"]
    chart = run.logged["roc_curve"]
    assert (chart["x"], chart["y"]) == ("fpr", "tpr") and "AUC" in chart["title"]
    assert chart["table"]["data"] == roc_table(result)[1]
    assert run.logged["per_model"]["columns"] == list(PER_MODEL_COLUMNS)
    assert [(a.type, a.files) for a in run.artifacts] == [("result", [str(path)])]
    assert run.finished


def test_log_result_logs_the_trials_evasion_frontier(fake_wandb, tmp_path: Path):
    from bench.report.frontier import method_frontier

    result = with_accuracies(synthetic_result())
    path = result_path(tmp_path, "tiny", "adv_tra", result["config_sha256"], 0)
    write_result(result, path)
    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), "tracking.wandb.mode=offline"])
    log_result(cfg, result, path)
    (run,) = fake_wandb.runs
    assert Path(run.logged["frontier"]["image"]).is_file()
    frontier = method_frontier([result], 0.01)
    for name, summary in [*frontier["families"].items(), ("overall", frontier["overall"])]:
        if summary["evasion_cost"] is None:
            assert run.summary[f"evasion_none_up_to/{name}"] == summary["max_drop_reached"]
        else:
            assert run.summary[f"evasion_cost/{name}"] == summary["evasion_cost"]
    assert any(k.startswith("evasion_") and k.endswith("/overall") for k in run.summary)


def test_log_zoo_model_records_lineage(fake_wandb, tmp_path: Path):
    checkpoint = tmp_path / "models" / "b2.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    checkpoint.with_suffix(".json").write_text("{}")
    record = {"model_id": "b2", "role": "positive", "attack": "prune", "kind": None, "parent": "a1", "arch": "convnet",
              "provenance": "train(convnet,digits:owner,seed=0)->prune(rate=0.4)", "sha256": "ff" * 32, "test_acc": 0.9}
    online = FakeRun(offline=False)
    log_zoo_model(online, record, checkpoint)
    (artifact,) = online.artifacts
    assert (artifact.name, artifact.type, artifact.description) == ("model-b2", "model", record["provenance"])
    assert {k: artifact.metadata[k] for k in record} == record
    assert artifact.metadata["parent_artifact"] == model_artifact_name("a1") == "model-a1"
    assert artifact.references == [(checkpoint.resolve().as_uri(), "b2.safetensors"),
                                   (checkpoint.with_suffix(".json").resolve().as_uri(), "b2.json")]
    assert online.used == ["model-a1:latest"]  # lineage edge: parent artifact -> this run -> this model
    offline = FakeRun(offline=True)
    log_zoo_model(offline, record, checkpoint)
    assert offline.used == [] and offline.artifacts[0].metadata["parent"] == "a1"  # W&B allows use_artifact online only
    source = FakeRun(offline=False)
    log_zoo_model(source, {**record, "role": "source", "attack": None, "parent": None}, checkpoint)
    assert source.used == [] and source.artifacts[0].metadata["parent_artifact"] is None
    disabled = FakeRun(disabled=True)
    log_zoo_model(disabled, record, checkpoint)
    assert disabled.artifacts == []


class FakeWandbLogger(RecordingLogger):
    """A recording Lightning logger whose `experiment` is a recording fake run (as `WandbLogger.experiment` is a W&B run)."""

    def __init__(self, job: Any) -> None:
        super().__init__()
        self.job, self.run = job, FakeRun(offline=False)

    @property
    def experiment(self) -> FakeRun:
        return self.run


def test_zoo_build_logs_each_model_as_an_artifact_of_its_training_run(fake_wandb, tmp_path: Path):
    from bench.zoo.build import build_zoo

    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), "zoo.source.epochs=1", "zoo.negatives=[]",
                              "zoo.positives=[{attack: ftll, epochs: 1}]"])
    loggers: list[FakeWandbLogger] = []

    def factory(job: Any) -> FakeWandbLogger:
        loggers.append(FakeWandbLogger(job))
        return loggers[-1]

    report = build_zoo(cfg, progress=False, logger_factory=factory)
    records = report.store.records()
    assert len(report.built) == 2 and [lg.job.model_id for lg in loggers] == report.built
    for logger in loggers:
        (artifact,) = logger.run.artifacts
        record = records[logger.job.model_id]
        assert artifact.name == model_artifact_name(record["model_id"]) and logger.run.finished
        assert artifact.metadata["sha256"] == record["sha256"] and artifact.metadata["role"] == record["role"]
        assert any(m.get("train/acc") is not None for m in logger.calls)  # the training curve went to the same run
    source, positive = loggers
    assert positive.run.artifacts[0].metadata["parent"] == source.job.model_id
    assert positive.run.artifacts[0].metadata["attack"] == "ftll"
    assert positive.run.used == [f"model-{source.job.model_id}:latest"] and source.run.used == []


def test_ray_task_logs_its_model_as_an_artifact(fake_wandb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The body of a Ray task (run in process here: Ray is optional) logs the model it built into its own run."""
    import dataclasses

    from bench.zoo import tasks
    from bench.zoo.build import prepare

    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), "zoo.source.epochs=1", "zoo.negatives=[]", "zoo.positives=[]"])
    loggers: list[FakeWandbLogger] = []
    monkeypatch.setattr(tasks, "training_logger_factory",
                        lambda cfg: lambda job: loggers.append(FakeWandbLogger(job)) or loggers[-1])
    threads = torch.get_num_threads()
    _, plan, _ = prepare(cfg)
    plan_data = {"name": plan.name, "dataset": plan.dataset, "split_hashes": dict(plan.split_hashes)}
    try:
        record = tasks.run_job_task(tasks.portable_config(cfg), dataclasses.asdict(plan.source), plan_data, 1)
    finally:
        torch.set_num_threads(threads)
    (logger,) = loggers
    (artifact,) = logger.run.artifacts
    assert artifact.name == model_artifact_name(record["model_id"]) and artifact.metadata["sha256"] == record["sha256"]
    assert logger.run.finished


# --- W&B failures never cost a result (issue #16 item 12) ---------------------------------------------


@pytest.fixture
def fresh_tracking():
    from bench import tracking

    tracking.reset()
    yield tracking
    tracking.reset()  # a fallback must not leak into later tests


def failing_init(fake: FakeWandb, *modes: str):
    """`fake.init` raising W&B's errors in `modes` (as online does with no network / no API key)."""
    real = fake.init
    attempts: list[dict[str, Any]] = []

    def init(**kwargs: Any) -> FakeRun:
        attempts.append(kwargs)
        if kwargs.get("mode") in modes:
            raise RuntimeError("Timed out while retrying: no such host\nConsider increasing the init_timeout")
        return real(**kwargs)

    fake.init = init
    return attempts


def test_online_failure_falls_back_to_offline_once(fake_wandb, fresh_tracking, tmp_path: Path, caplog):
    fake_wandb.Settings = lambda **kwargs: types.SimpleNamespace(**kwargs)
    attempts = failing_init(fake_wandb, "online")
    results = [synthetic_result("akh"), synthetic_result("random")]
    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), "tracking.wandb.mode=online"])
    with caplog.at_level("ERROR", logger="bench.tracking"):
        for result in results:
            path = result_path(tmp_path, "tiny", result["method"]["name"], result["config_sha256"], 0)
            write_result(result, path)
            assert log_result(cfg, result, path) == "fake-run-dir"  # logged offline instead
    assert [a["mode"] for a in attempts] == ["online", "offline", "offline"]  # online tried once only
    assert attempts[0]["settings"].init_timeout == fresh_tracking.ONLINE_INIT_TIMEOUT_S  # no 90 s wait
    assert [r.init_kwargs["mode"] for r in fake_wandb.runs] == ["offline", "offline"] and all(r.finished for r in fake_wandb.runs)
    (error,) = caplog.records
    assert "W&B failed while logging result tiny/akh" in error.message and "RuntimeError: Timed out" in error.message
    assert "offline for the rest of this run" in error.message
    lines = fresh_tracking.sync_lines()
    assert "W&B failed 1 time(s)" in lines[0] and "it ran offline from then on" in lines[0]
    assert lines[1].endswith(f"wandb sync {tmp_path / 'cache' / 'wandb' / 'offline-run-*'}")


def test_offline_failure_disables_wandb(fake_wandb, fresh_tracking, tmp_path: Path, caplog):
    attempts = failing_init(fake_wandb, "offline")
    result = synthetic_result()
    path = result_path(tmp_path, "tiny", "adv_tra", result["config_sha256"], 0)
    write_result(result, path)
    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), "tracking.wandb.mode=offline"])
    assert log_result(cfg, result, path) is None and log_result(cfg, result, path) is None
    assert len(attempts) == 1 and fresh_tracking.effective_mode("offline") == "disabled"
    assert "disabled for the rest of this run" in caplog.records[-1].message
    assert fresh_tracking.sync_lines() == [f"W&B failed 1 time(s) (first: {fresh_tracking._STATE.failures[0]}); "
                                           "it ran disabled from then on, no result was lost."]


def test_a_failing_call_on_an_open_run_falls_back_and_mutes_that_run(fresh_tracking, caplog):
    class BrokenLog(FakeRun):
        def log(self, data: dict[str, Any]) -> None:
            raise ConnectionError("network is gone")

    run = fresh_tracking.GuardedRun(BrokenLog(offline=False), "logging zoo model a1's training", "online")
    run.log({"train/loss": 1.0})
    run.log({"train/loss": 0.5})  # muted: one error only
    run.finish()  # still tried: it releases the run
    assert run.failed and run.run.finished and run.dir == "fake-run-dir"
    assert fresh_tracking.effective_mode("online") == "offline"
    record = {"model_id": "b2", "parent": "a1", "offline": False}
    log_zoo_model(run, record, Path("missing.safetensors"))  # a failed run logs no artifact, raises nothing
    (error,) = caplog.records  # one error in all: the artifact of the muted run was not even tried
    assert "zoo model a1's training (log)" in error.message and "ConnectionError: network is gone" in error.message


def test_fpbench_run_with_unreachable_wandb_loses_nothing(fresh_tracking, tmp_path: Path, monkeypatch, capsys, caplog):
    """`tracking.wandb.mode=online` and a `wandb.init` that raises (what no network or no API key does):
    every zoo model and method finishes, every result and the leaderboard are written before W&B is
    first asked to log one, the run exits 0 and ends by saying how to upload the offline runs."""
    wandb = pytest.importorskip("wandb")
    from bench.cli import main

    real_init = wandb.init
    calls: list[tuple[str, str]] = []
    results_dir = tmp_path / "out" / "results"
    seen_at_first_eval: list[int] = []

    def init(*args: Any, **kwargs: Any) -> Any:
        calls.append((kwargs.get("job_type"), kwargs.get("mode")))
        if kwargs.get("mode") == "online":
            raise wandb.errors.CommError("Timed out while retrying: dial tcp: lookup api.wandb.ai: no such host")
        if kwargs.get("job_type") == "eval" and not seen_at_first_eval:
            seen_at_first_eval.append(len(list(results_dir.rglob("runs/**/*.json"))))
            seen_at_first_eval.append((results_dir / "leaderboard.md").is_file())
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_INIT_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    overrides = [*smoke_overrides(tmp_path / "out"), "tracking.wandb.mode=online", "zoo.source.epochs=1",
                 "zoo.positives=[{attack: ftal, epochs: 1}]", "zoo.negatives=[{kind: SAST, seed: 1, epochs: 1}]",
                 "methods=[akh,random]"]
    with caplog.at_level("ERROR", logger="bench.tracking"):
        assert main(["run", str(SMOKE), *overrides]) == 0
    out = capsys.readouterr().out
    assert len(list((results_dir / "runs" / "smoke").rglob("*.json"))) == 2 and (results_dir / "leaderboard.md").is_file()
    assert calls[:2] == [("zoo", "online"), ("zoo", "offline")]  # one online attempt, then offline for the rest
    assert [mode for _, mode in calls[2:]] == ["offline"] * 4 and [job for job, _ in calls[-2:]] == ["eval", "eval"]
    assert seen_at_first_eval == [2, True]  # files first: both results and the leaderboard before any W&B result run
    assert len(list((tmp_path / "out" / "cache" / "wandb").glob("offline-run-*"))) == 5
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "CommError" in error.message and "offline for the rest of this run" in error.message
    assert "W&B failed 1 time(s)" in out
    assert f"wandb sync {tmp_path / 'out' / 'cache' / 'wandb' / 'offline-run-*'}" in out


def test_the_wandb_sync_hint_runs_as_printed_from_a_folder_with_a_space_and_a_quote(fresh_tracking, tmp_path: Path):
    """Before, `wandb sync <folder>/wandb/offline-run-*` was printed unquoted: a shell split it at the space."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash on this system")
    folder = tmp_path / "my runs" / "it's here"
    runs = [folder / "wandb" / "offline-run-1", folder / "wandb" / "offline-run-2"]
    for run in runs:
        run.mkdir(parents=True)
    fresh_tracking._STATE.offline_dirs.append(str(folder))
    (line,) = fresh_tracking.sync_lines()
    command = line.split("(an account is needed): ", 1)[1]
    assert command.startswith("wandb sync '")
    shell = subprocess.run([bash, "-c", 'wandb() { printf "%s\\n" "$@"; }; ' + command], capture_output=True,
                           text=True, check=True)  # a stand-in `wandb` that prints the arguments it got
    assert shell.stdout.splitlines() == ["sync", *map(str, runs)]  # the glob is left to the shell
