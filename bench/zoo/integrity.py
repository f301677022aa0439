"""Behaviour records: what a zoo model did when it was built, re-measured whenever it is loaded for scoring.

A checkpoint's sha256 in the manifest stops accidents, not a writer who swaps the file and updates the
hash with it, or who edits `test_acc`. What such a writer cannot make up cheaply is the *behaviour*
the record describes, so the build stores, with each record, the model's labels on the first
`CHECK_SAMPLES` test inputs and their logit margins (`check`), and the evaluation loop predicts them again before it scores a
model (`behaviour_problems`): the labels, the test accuracy and the agreement with the source must
match what was recorded, within what float kernels of another processor can change. The threat model
(who may write the zoo and the cache, and what stays trusted) is in docs/decisions.md, "Integrity".
"""

from __future__ import annotations

import base64
import math
from typing import Any

import torch

from bench.modes import eval_mode

CHECK_SAMPLES = 1000  # labels recorded per model: ~1 KB of the manifest, one small forward pass at load
# Share of recorded labels allowed to differ: another CPU's kernels flip a few inputs near a decision
# boundary (well under 1 %); two distinct models of one recipe disagree on ~5-15 % of inputs.
LABEL_TOLERANCE = 0.02
# A logit margin (top-1 minus top-2) "moved" when it changed by more than this: float16 storage keeps ~3
# digits and other kernels change ~6; a different model's margins differ by whole units almost everywhere.
MARGIN_RTOL, MARGIN_ATOL = 0.01, 0.01
BINOMIAL_Z = 4.0  # a recorded full-split accuracy vs its value on a subset: 4 standard errors of slack


def model_outputs(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 labels, top-1 minus top-2 logit) of `model` on `x`, in eval mode (every submodule's mode restored)."""
    device = next(model.parameters()).device
    with eval_mode(model), torch.no_grad():
        logits = torch.cat([model(xb.to(device)).float().cpu() for xb in x.split(batch_size)]) if len(x) else torch.zeros(0, 2)
    top = logits.topk(2, dim=1).values if logits.shape[1] > 1 else torch.cat([logits, logits], 1)
    return logits.argmax(1), top[:, 0] - top[:, 1]


def behaviour_record(labels: torch.Tensor, margins: torch.Tensor) -> dict[str, Any]:
    """`{"n", "dtype", "labels", "margins"}` of a model's `model_outputs` on the test split, kept for its first
    `CHECK_SAMPLES` inputs: the labels (base64 of uint8, or int16 above 255 classes) and the top-1 minus
    top-2 logit margins (base64 of float16)."""
    labels, margins = labels[:CHECK_SAMPLES], margins[:CHECK_SAMPLES]
    dtype = torch.uint8 if len(labels) == 0 or int(labels.max()) < 256 else torch.int16
    return {"n": len(labels), "dtype": "uint8" if dtype is torch.uint8 else "int16",
            "labels": base64.b64encode(labels.to(dtype).numpy().tobytes()).decode("ascii"),
            "margins": base64.b64encode(margins.to(torch.float16).numpy().tobytes()).decode("ascii")}


def _decode(text: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text, validate=True)), dtype=dtype)


def recorded_outputs(check: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The (labels, margins) a `behaviour_record` holds.

    Raises:
        ValueError: a record that is not one (a field missing, undecodable or of the wrong length).
    """
    try:
        labels = _decode(check["labels"], {"uint8": torch.uint8, "int16": torch.int16}[check["dtype"]]).to(torch.int64)
        margins = _decode(check["margins"], torch.float16).float()
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"its `check` record is not a behaviour record ({type(err).__name__}: {err})") from None
    if not len(labels) == len(margins) == check.get("n"):
        raise ValueError(f"its `check` record holds {len(labels)} labels and {len(margins)} margins, not n={check.get('n')}")
    return labels, margins


def _moved(recorded: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
    """Where a margin moved more than float kernels and float16 storage explain (1 % of it, plus 0.01)."""
    return (now - recorded).abs() > MARGIN_RTOL * recorded.abs() + MARGIN_ATOL


def _slack(recorded: float, n_now: int, n_recorded: int | None) -> float:
    """How far a rate measured on `n_now` inputs may sit from one recorded on `n_recorded` (None: unknown)."""
    if n_recorded is not None and n_now >= n_recorded:
        return LABEL_TOLERANCE
    p = min(max(recorded, 0.0), 1.0)
    return LABEL_TOLERANCE + BINOMIAL_Z * math.sqrt(max(p * (1 - p), 1e-4) / max(n_now, 1))


def behaviour_problems(record: dict[str, Any], outputs: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor,
                       source_labels: torch.Tensor | None, test_size: int) -> list[str]:
    """How a model's labels on the first test inputs contradict its manifest record (empty: they agree).

    Args:
        record: the manifest record (`check`, `test_acc`, `source_agreement`; older records lack `check`).
        outputs: the loaded model's (labels, margins) on the first test inputs (`model_outputs`).
        y: their true labels.
        source_labels: the source's labels on the same inputs (None for the source itself).
        test_size: the size of the whole test split (the recorded figures are over all of it).
    """
    problems = []
    labels, margins = outputs
    n = len(labels)
    check = record.get("check")
    if check is not None:
        try:
            expected, expected_margins = recorded_outputs(check)
        except ValueError as err:
            return [str(err)]
        m = min(len(expected), n)
        flipped = int((expected[:m] != labels[:m]).sum())
        moved = int(_moved(expected_margins[:m], margins[:m]).sum())
        if flipped > LABEL_TOLERANCE * m or moved > LABEL_TOLERANCE * m:
            problems.append(f"of the {m} test inputs checked, {flipped} labels and {moved} logit margins differ from "
                            f"those recorded at build time (at most {LABEL_TOLERANCE:.0%} may, for another processor's "
                            "float kernels)")
        recorded_acc = int((expected[:m] == y[:m]).sum()) / max(m, 1)  # what the build measured, from its own labels
        exact = 1e-9 if m >= test_size else _slack(recorded_acc, m, None) - LABEL_TOLERANCE
        if isinstance(record.get("test_acc"), (int, float)) and abs(recorded_acc - record["test_acc"]) > exact:
            problems.append(f"test_acc is recorded as {record['test_acc']:.4f}, but the labels recorded with it give "
                            f"{recorded_acc:.4f} on the first {m} test inputs")
    measured = {"test_acc": int((labels == y).sum()) / max(n, 1)}
    if source_labels is not None:
        measured["source_agreement"] = int((labels == source_labels).sum()) / max(n, 1)
    for key, now in measured.items():
        recorded = record.get(key)
        if isinstance(recorded, (int, float)) and abs(now - recorded) > _slack(recorded, n, test_size):
            problems.append(f"{key} is recorded as {recorded:.4f} but measures {now:.4f} on the first {n} test inputs")
    return problems


class ForgedModelError(RuntimeError):
    """A zoo model whose behaviour contradicts its manifest record (a checkpoint swapped with its sha256,
    or a record edited); nothing is scored with it."""


class BehaviourCheck:
    """Re-measures loaded zoo models on the first test inputs against their records (`behaviour_problems`).

    Build it with the source model first: every later model's agreement is measured against it.
    """

    def __init__(self, datamodule: Any, source: torch.nn.Module, source_record: dict[str, Any], where: str) -> None:
        self.test_size = datamodule.split_size("test")
        self.x, self.y = datamodule.tensors("test", min(CHECK_SAMPLES, self.test_size))
        self.where = where
        self.source_labels: torch.Tensor | None = None
        self.source_labels = self.check(source, source_record)

    def check(self, model: torch.nn.Module, record: dict[str, Any]) -> torch.Tensor:
        """The model's labels on the check inputs, after comparing them with its record.

        Raises:
            ForgedModelError: naming the model, each contradiction and what to do.
        """
        outputs = model_outputs(model, self.x)
        problems = behaviour_problems(record, outputs, self.y, self.source_labels, self.test_size)
        if problems:
            raise ForgedModelError(
                f"Model {record['model_id']} ({record.get('provenance')}) of {self.where} does not behave as its "
                f"manifest record says: {'; '.join(problems)}. Its checkpoint was replaced (with its sha256 updated) "
                "or its record edited. Nothing was scored with it. Restore the zoo from a trusted copy, or delete the "
                "model's line and checkpoint and rerun `fpbench zoo RECIPE` to rebuild it.")
        return outputs[0]
