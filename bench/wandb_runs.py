"""W&B runs without the report layer: the settings of the mode in force, the guard every W&B call goes
through, Lightning's training loggers and the zoo models' artifacts. The zoo imports this module; the
result, sweep and board logging that draws the report's plots lives in `bench.tracking`, which
re-exports everything here (docs/tracking.md; docs/architecture.md, "Import direction").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loggers.logger import DummyExperiment

from bench.model_spec import to_dict
from bench.tracking_state import _STATE, effective_mode, fall_back

log = logging.getLogger(__name__)
T = TypeVar("T")

ONLINE_INIT_TIMEOUT_S = 20.0  # wandb.init's own default waits 90 s for an unreachable server; WANDB_INIT_TIMEOUT overrides


def wandb_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """Keyword arguments for `wandb.init` in the mode now in force, or None when W&B is disabled."""
    wb = cfg.tracking.wandb
    mode = effective_mode(wb.mode)
    if mode == "disabled":
        return None
    root = Path(wb.dir)
    root.mkdir(parents=True, exist_ok=True)
    # W&B also writes caches/config under these; keep them inside the configured folder.
    os.environ.setdefault("WANDB_CACHE_DIR", str(root / "wandb-cache"))
    os.environ.setdefault("WANDB_CONFIG_DIR", str(root / "wandb-config"))
    os.environ.setdefault("WANDB_DATA_DIR", str(root / "wandb-data"))
    os.environ.setdefault("WANDB_SILENT", "true")
    settings = {"mode": mode, "project": wb.project, "entity": wb.entity, "dir": str(root), "group": wb.group or cfg.zoo.name}
    if mode == "online" and "WANDB_INIT_TIMEOUT" not in os.environ:
        import wandb

        settings["settings"] = wandb.Settings(init_timeout=ONLINE_INIT_TIMEOUT_S)
    return settings


def with_fallback(what: str, cfg: DictConfig, body: Callable[[dict[str, Any]], T]) -> T | None:
    """``body(settings)`` through the guard: on any exception fall back (online -> offline -> disabled)
    and try once more in the new mode; None when W&B is (or ends up) disabled."""
    settings = wandb_settings(cfg)
    while settings is not None:
        try:
            out = body(settings)
        except Exception as err:  # any W&B failure (CommError, UsageError, timeouts, ...) costs only W&B
            fall_back(what, err, settings["mode"])
            settings = wandb_settings(cfg)  # strictly fewer W&B than before, so this ends
            continue
        if settings["mode"] == "offline" and settings["dir"] not in _STATE.offline_dirs:
            _STATE.offline_dirs.append(settings["dir"])
        return out
    return None


class GuardedRun:
    """A W&B run whose every method call goes through the guard: the first failure is logged and
    falls back, and the run's later calls do nothing (except `finish`, always tried)."""

    def __init__(self, run: Any, what: str, mode: str) -> None:
        self.run, self.what, self.mode, self.failed = run, what, mode, False

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.run, name)
        if not callable(value):
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.failed and name != "finish":
                return None
            try:
                return value(*args, **kwargs)
            except Exception as err:
                if not self.failed:
                    fall_back(f"{self.what} ({name})", err, self.mode)
                self.failed = True
                return None

        return guarded


class GuardedWandbLogger(WandbLogger):
    """`WandbLogger` whose run is a `GuardedRun` (module level: a spawned DDP rank unpickles it)."""

    def __init__(self, what: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._what, self._guarded_run = what, None

    @property
    def experiment(self) -> Any:
        run = WandbLogger.experiment.fget(self)  # rank > 0: Lightning's dummy, nothing to guard
        if isinstance(run, (DummyExperiment, GuardedRun)):
            return run
        if self._guarded_run is None or self._guarded_run.run is not run:
            self._guarded_run = GuardedRun(run, self._what, self._wandb_init.get("mode", "offline"))
        return self._guarded_run

    def log_hyperparams(self, params: Any) -> None:
        try:
            super().log_hyperparams(params)
        except Exception as err:
            fall_back(f"{self._what} (hyperparameters)", err, self._wandb_init.get("mode", "offline"))

    def __getstate__(self) -> dict[str, Any]:  # a spawned DDP rank re-attaches to the run itself
        state = super().__getstate__()
        state["_guarded_run"] = None
        return state


def training_logger_factory(cfg: DictConfig) -> Callable[[Any], Any] | None:
    """job -> a Lightning `WandbLogger` for that zoo model's training curve, False when W&B failed
    (None when disabled). The run is opened here, inside the guard, not later inside the fit."""
    if effective_mode(cfg.tracking.wandb.mode) == "disabled" or not cfg.tracking.wandb.log_zoo:
        return None

    def factory(job: Any) -> Any:
        what = f"logging zoo model {job.model_id}'s training"

        def open_logger(settings: dict[str, Any]) -> Any:
            kwargs = dict(settings)
            save_dir = kwargs.pop("dir")  # WandbLogger ignores `dir` unless save_dir is left at "."
            logger = GuardedWandbLogger(what, name=f"zoo/{job.role}/{job.model_id}", save_dir=save_dir, job_type="zoo",
                                             reinit="finish_previous", config={"job": job.record_base(), "recipe": to_dict(cfg)},
                                             **kwargs)
            _ = logger.experiment  # wandb.init now, where a failure falls back, not inside Lightning's fit
            return logger

        return with_fallback(what, cfg, open_logger) or False

    return factory


MODEL_ARTIFACT_KEYS = ("model_id", "role", "attack", "kind", "parent", "provenance", "sha256", "arch", "test_acc")


def model_artifact_name(model_id: str) -> str:
    """The W&B artifact name of a zoo model (one artifact collection per model id)."""
    return f"model-{model_id}"


def log_zoo_model(run: Any, record: dict[str, Any], checkpoint: Path) -> None:
    """Log one built zoo model as a W&B artifact of `run` (the run that trained it), with its lineage.

    The artifact (type `model`, named `model_artifact_name`) holds the manifest facts as metadata
    (`MODEL_ARTIFACT_KEYS` + `parent_artifact`) and *references* the checkpoint files (file:// URIs
    with checksums): the zoo directory stays the store of record, nothing is copied or uploaded. A
    derived model's run also declares its parent's artifact as input (`run.use_artifact`), which draws
    the lineage graph parent -> attack run -> model; W&B allows that only online, so offline runs
    carry the parent in the metadata alone.

    Args:
        run: an open `wandb` run (e.g. a `WandbLogger`'s `experiment`); a disabled run is skipped.
        record: the model's manifest record (`bench.zoo`).
        checkpoint: its `models/<id>.safetensors` (the `<id>.json` beside it is referenced too).
    """
    if getattr(run, "disabled", False) or getattr(run, "failed", False):  # a GuardedRun that failed already
        return
    try:
        _log_zoo_model(run, record, Path(checkpoint))
    except Exception as err:  # the model is in the manifest already; only its W&B artifact is lost
        fall_back(f"logging zoo model {record['model_id']} as an artifact", err,
                  "offline" if getattr(run, "offline", True) else "online")


def _log_zoo_model(run: Any, record: dict[str, Any], checkpoint: Path) -> None:
    import wandb

    metadata = {key: record.get(key) for key in MODEL_ARTIFACT_KEYS}
    parent = record.get("parent")
    metadata["parent_artifact"] = model_artifact_name(parent) if parent else None
    if parent and not getattr(run, "offline", True):
        try:
            run.use_artifact(f"{model_artifact_name(parent)}:latest", type="model")
        except Exception as err:  # e.g. the parent was built while W&B was off: the metadata still names it
            log.warning("W&B lineage: parent artifact %s of %s not found (%s); the parent stays in the metadata only.",
                        model_artifact_name(parent), record["model_id"], err)
    artifact = wandb.Artifact(name=model_artifact_name(record["model_id"]), type="model",
                              description=record.get("provenance"), metadata=metadata)
    for path in (checkpoint, checkpoint.with_suffix(".json")):
        if path.is_file():
            artifact.add_reference(path.resolve().as_uri(), name=path.name)
    run.log_artifact(artifact)


@contextmanager
def _wandb_run(settings: dict[str, Any], name: str, job_type: str, config: dict[str, Any] | None = None,
               artifact: tuple[str, str, Path] | None = None) -> Iterator[Any]:
    """One finished-for-sure W&B run; `artifact` = (name, type, file) is attached before it closes."""
    import wandb

    run = wandb.init(name=name, job_type=job_type, config=config, reinit="finish_previous", **settings)
    try:
        yield run
        if artifact is not None:
            art = wandb.Artifact(name=artifact[0], type=artifact[1])
            art.add_file(str(artifact[2]))
            run.log_artifact(art)
    finally:
        run.finish()
