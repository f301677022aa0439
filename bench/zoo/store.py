"""A zoo on disk: `manifest.jsonl` + `models/<id>.safetensors` (+ `<id>.json`), atomic and locked.

Checkpoints are safetensors only, so loading a model never unpickles anything; every load checks
the file's sha256 against the manifest, so a changed checkpoint is refused by model id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from safetensors.torch import load_file
from torch import nn

from bench.io import (
    STALE_TEMP_S,
    FileReadError,
    atomic_save_tensors,
    atomic_write_json,
    atomic_write_text,
    read_bytes_bounded,
    sha256_file,
    stale_temp_files,
    temp_files,
    temp_target,
)
from bench.nets import build_model

log = logging.getLogger(__name__)


class ZooError(RuntimeError):
    """A zoo on disk is missing, locked or inconsistent."""


class TamperedCheckpointError(ZooError):
    """A checkpoint's bytes do not match the sha256 the manifest recorded."""


# What every manifest record holds for the zoo, the loop and the checks to use it (bench.zoo.jobs.finish_record).
REQUIRED_KEYS = ("model_id", "role", "provenance", "arch", "arch_params", "data", "sha256", "test_acc", "train_seconds")
MANIFEST_MAX_BYTES = 1 << 30  # ~1 KiB a record: a million models; a bigger "manifest" is not one


class ZooStore:
    """Reads and writes one zoo directory (`<zoo_dir>/<name>/`)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.manifest_path = self.root / "manifest.jsonl"

    # -- manifest ---------------------------------------------------------------------------
    def records(self) -> dict[str, dict[str, Any]]:
        """model_id -> record, in manifest order; {} when there is no manifest yet.

        Raises:
            ZooError: a manifest that is not a regular file (a link to ``/dev/zero``) or is over
                `MANIFEST_MAX_BYTES`; a line that is not UTF-8, not a JSON object, or lacks a key of
                `REQUIRED_KEYS`; the message names the manifest, the line (and model id when readable) and the fix.
        """
        if not os.path.lexists(self.manifest_path):
            return {}
        data = self._manifest_bytes()
        out: dict[str, dict[str, Any]] = {}
        for n, raw in enumerate(data.split(b"\n"), 1):
            if not raw.strip():
                continue
            where = f"{self.manifest_path}:{n}"
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise ZooError(f"{where} is not UTF-8 text (byte {err.start} of the line). {self._line_fix(n)}") from None
            except json.JSONDecodeError as err:
                raise ZooError(f"{where} is not valid JSON ({err}). {self._line_fix(n)}") from None
            if not isinstance(record, dict):
                raise ZooError(f"{where} is a JSON {type(record).__name__}, not a model record. {self._line_fix(n)}")
            missing = [key for key in REQUIRED_KEYS if key not in record]
            if missing:
                model = f" (model {record['model_id']})" if isinstance(record.get("model_id"), str) else ""
                raise ZooError(f"{where}{model} lacks {', '.join(missing)}. {self._line_fix(n)}")
            out[record["model_id"]] = record
        return out

    def _line_fix(self, n: int) -> str:
        return (f"Restore the manifest from a copy, or delete line {n} of {self.manifest_path} and rerun "
                "`fpbench zoo RECIPE`: it rebuilds the model that line recorded (results measured on it name the "
                "old manifest sha256).")

    def write_records(self, records: dict[str, dict[str, Any]]) -> None:
        """Rewrite the whole manifest atomically (temp file + rename)."""
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records.values())
        atomic_write_text(self.manifest_path, text)

    def add_record(self, record: dict[str, Any]) -> None:
        records = self.records()
        records[record["model_id"]] = record
        self.write_records(records)

    def manifest_sha256(self) -> str:
        """Hex sha256 of the manifest's bytes.

        Raises:
            ZooError: naming the manifest, when there is none, or it is not a regular file (a link to
                ``/dev/zero`` would be hashed forever), or it is over `MANIFEST_MAX_BYTES`.
        """
        if not os.path.lexists(self.manifest_path):
            raise ZooError(f"No manifest at {self.manifest_path}: build the zoo first (fpbench zoo RECIPE).")
        return hashlib.sha256(self._manifest_bytes()).hexdigest()

    def _manifest_bytes(self) -> bytes:
        """The manifest's bytes, read bounded (`bench.io.read_bytes_bounded`); a ZooError names what is wrong."""
        try:
            return read_bytes_bounded(self.manifest_path, MANIFEST_MAX_BYTES, "zoo manifest")
        except FileReadError as err:  # not a regular file, or too large: the message starts with the path
            raise ZooError(str(err)) from None
        except OSError as err:  # a dangling link, no permission
            raise ZooError(f"{self.manifest_path}: cannot be read ({err.strerror or err}); restore the manifest from "
                           "a copy, or delete it and its zoo folder and rerun `fpbench zoo RECIPE`.") from None

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint_path(self, model_id: str) -> Path:
        return self.models_dir / f"{model_id}.safetensors"

    def save_model(self, model_id: str, model: nn.Module, meta: dict[str, Any]) -> str:
        """Write the weights (safetensors) and the arch description atomically; returns the sha256."""
        path = self.checkpoint_path(model_id)
        atomic_save_tensors(path, model.state_dict(), metadata={"model_id": model_id})
        atomic_write_json(self.models_dir / f"{model_id}.json", meta)
        return sha256_file(path)

    def verify(self, record: dict[str, Any]) -> bool:
        """True if the checkpoint exists and matches; raises TamperedCheckpointError if it differs."""
        path = self.checkpoint_path(record["model_id"])
        if not path.is_file():
            return False
        actual = sha256_file(path)
        if actual != record["sha256"]:
            raise TamperedCheckpointError(
                f"Checkpoint of model {record['model_id']} ({record['provenance']}) was changed: sha256 {actual[:12]}… "
                f"!= manifest {record['sha256'][:12]}…. Delete {path} to rebuild it, or restore the original file.")
        return True

    def unbuilt(self, jobs: list[Any]) -> list[Any]:
        """The jobs (anything with a `model_id`) whose model is not recorded with a verified checkpoint."""
        records = self.records()
        return [job for job in jobs if not (job.model_id in records and self.verify(records[job.model_id]))]

    def load_model(self, model_id: str, record: dict[str, Any] | None = None) -> nn.Module:
        """Rebuild the architecture and load verified weights; never unpickles."""
        record = record or self.records().get(model_id)
        if record is None:
            raise ZooError(f"Model {model_id} is not in {self.manifest_path}. `fpbench zoo RECIPE --list` shows the zoo.")
        if not self.verify(record):
            raise ZooError(f"Checkpoint of model {model_id} is missing at {self.checkpoint_path(model_id)}; rebuild the zoo.")
        path = self.checkpoint_path(model_id)
        try:
            data = record["data"]
            model = build_model(record["arch"], in_channels=data["in_channels"], num_classes=data["num_classes"],
                                image_size=data["image_size"], mean=data["mean"], std=data["std"], params=record["arch_params"])
            model.load_state_dict(load_file(str(path)))
        except (KeyError, TypeError, ValueError, RuntimeError) as err:  # a size mismatch is a RuntimeError
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
            # torch: a header, then the first mismatch
            detail = lines[1] if len(lines) > 1 else (lines[0] if lines else repr(err))
            raise ZooError(
                f"Model {model_id} ({record.get('provenance')}) cannot be loaded: its checkpoint {path} does not fit the "
                f"architecture its record in {self.manifest_path} describes (arch {record.get('arch')!r}, "
                f"{type(err).__name__}: {detail}). Record and checkpoint disagree (the record edited, or the checkpoint "
                f"swapped together with its sha256). Restore the manifest from a copy, or delete the model's line and "
                f"{path} and rerun `fpbench zoo RECIPE` to rebuild it.") from None
        return model.eval()

    def clean_stale_temps(self, started: float) -> list[Path]:
        """Delete the atomic-write temp files (``.<file>.<12 hex>.tmp``) killed writers left in the zoo.

        Call it holding :meth:`lock`, before any model is trained. Every writer of `models/` and of the
        manifest runs under that lock (the build; its Ray tasks, started after this call; a Ray task
        dies with its driver), so such temps belong to no live writer and go at once. Other temps in
        the zoo folder (`fpbench zoo import` writes `recipe.yaml` after its build, without the lock) go
        only when unmodified for ``STALE_TEMP_S`` before ``started`` (epoch seconds).

        Returns:
            The paths removed (each one is logged).
        """
        locked = [*temp_files(self.models_dir),
                  *(p for p in temp_files(self.root) if temp_target(p.name) == self.manifest_path.name)]
        aged = [p for p in stale_temp_files(self.root, started) if temp_target(p.name) != self.manifest_path.name]
        removed = []
        for path, why in [*((p, "no writer of it can be live while the zoo lock is held") for p in locked),
                          *((p, f"unmodified for over {STALE_TEMP_S:.0f} s") for p in aged)]:
            try:
                path.unlink()
            except FileNotFoundError:  # gone meanwhile
                continue
            removed.append(path)
            log.info("Removed temporary file %s, left by an interrupted write (%s).", path, why)
        return removed

    @contextmanager
    def lock(self, timeout: float = 0.5) -> Iterator[None]:
        """Exclusive access for a build: a second build of the same zoo fails fast instead of corrupting it."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / ".lock"))
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise ZooError(f"Zoo {self.root} is being built by another process (lock {self.root / '.lock'}). "
                           "Wait for it to finish, or delete the lock file if that process is gone.") from None
        try:
            yield
        finally:
            lock.release()


def load_model(zoo_dir: str | os.PathLike, model_id: str) -> nn.Module:
    """Load one model of the zoo at `zoo_dir` (the folder holding manifest.jsonl), sha256-verified."""
    return ZooStore(zoo_dir).load_model(model_id)
