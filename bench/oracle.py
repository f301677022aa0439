"""Black-box access to a suspect model: the only way a fingerprinting method sees a suspect."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Access = Literal["label", "probs"]
ACCESS_LEVELS: tuple[str, ...] = ("label", "probs")


class AccessError(PermissionError):
    """A method asked the oracle for more than its declared access allows."""


class Oracle:
    """Answers queries on a suspect model, counting them.

    The suspect runs in eval mode under `torch.no_grad`; its previous mode is restored after each
    call. Large query sets are split into batches of `batch_size`. Inputs must lie in [0,1].

    Args:
        model: the suspect.
        access: "label" (top-1 labels only) or "probs" (softmax probabilities too).
        batch_size: largest batch sent to the model at once.
    """

    def __init__(self, model: nn.Module, access: Access = "label", batch_size: int = 1024,
                 manifest_role: str | None = None) -> None:
        if access not in ACCESS_LEVELS:
            raise ValueError(f"Unknown access '{access}'. Allowed: {', '.join(ACCESS_LEVELS)}.")
        self._model = model
        self.access: Access = access
        self.batch_size = int(batch_size)
        self.queries = 0
        # Only the test-only `oracle_label` guard reads this; real methods never see the role.
        self.manifest_role = manifest_role

    @property
    def device(self) -> torch.device:
        try:
            return next(self._model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"Oracle queries are a batch of inputs; got a tensor of shape {tuple(x.shape)}.")
        was_training = self._model.training
        self._model.eval()
        outputs = []
        try:
            with torch.no_grad():
                for chunk in x.split(self.batch_size):
                    outputs.append(self._model(chunk.to(self.device)).float())
        finally:
            self._model.train(was_training)
        self.queries += int(x.shape[0])
        return torch.cat(outputs).to(x.device)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Top-1 labels of the suspect for a batch `x` ([B, C, H, W] in [0,1])."""
        return self._logits(x).argmax(dim=1)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities; only for methods that declared `access = "probs"`."""
        if self.access != "probs":
            raise AccessError("This oracle gives labels only: the method declared access='label'. "
                              "Declare access = 'probs' in the method class if it needs probabilities.")
        return self._logits(x).softmax(dim=1)
