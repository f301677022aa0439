"""Black-box access to a suspect model: the only way a fingerprinting method sees a suspect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from bench.modes import eval_mode

if TYPE_CHECKING:
    from bench.endpoints import Endpoint

# What verification may see, from least to most: top-1 labels; softmax probabilities too; and, for
# the guard methods that test the loop (never a real method), the suspect's manifest role as well.
Access = Literal["label", "probs", "manifest"]
ACCESS_LEVELS: tuple[str, ...] = ("label", "probs", "manifest")
PROBS_ACCESS: tuple[str, ...] = ("probs", "manifest")  # the levels that may read probabilities


class AccessError(PermissionError):
    """A method asked the oracle for more than its declared access allows."""


class Oracle:
    """Answers queries on a suspect model, counting them.

    The suspect runs in eval mode under `torch.no_grad`; every submodule's previous mode is restored
    after each call. Large query sets are split into batches of `batch_size`. Inputs must lie in [0,1].
    A suspect behind an API (`bench.endpoints.Endpoint`) is asked for labels or probabilities
    directly, in its own batch size; queries are counted the same way: one per input.

    Args:
        model: the suspect: a model, or an endpoint.
        access: "label" (top-1 labels only), "probs" (softmax probabilities too) or "manifest"
            (probabilities and the suspect's manifest role: loop guards such as `oracle_label` only).
        batch_size: largest batch sent to the model at once.
        manifest_role: the suspect's role in the zoo manifest ("positive" / "negative"); the loop
            passes it for every suspect, and the oracle shows it only at access "manifest".
    """

    def __init__(self, model: nn.Module | Endpoint, access: Access = "label", batch_size: int = 1024,
                 manifest_role: str | None = None) -> None:
        if access not in ACCESS_LEVELS:
            raise ValueError(f"Unknown access '{access}'. Allowed: {', '.join(ACCESS_LEVELS)}.")
        self._model = model
        self.access: Access = access
        self.batch_size = int(batch_size)
        self.queries = 0
        self._manifest_role = manifest_role  # exposed by `manifest_role` at access "manifest" only

    @property
    def device(self) -> torch.device:
        if not isinstance(self._model, nn.Module):  # an endpoint: answers come back on the CPU
            return torch.device("cpu")
        try:
            return next(self._model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    @staticmethod
    def _check_batch(x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"Oracle queries are a batch of inputs; got a tensor of shape {tuple(x.shape)}.")

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        self._check_batch(x)
        outputs = []
        with eval_mode(self._model), torch.no_grad():
            for chunk in x.split(self.batch_size):
                outputs.append(self._model(chunk.to(self.device)).float())
        self.queries += int(x.shape[0])
        return torch.cat(outputs).to(x.device)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Top-1 labels of the suspect for a batch `x` ([B, C, H, W] in [0,1])."""
        if not isinstance(self._model, nn.Module):
            return self._endpoint(x, "labels")
        return self._logits(x).argmax(dim=1)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities; only for methods that declared `access = "probs"` (or "manifest")."""
        if self.access not in PROBS_ACCESS:
            raise AccessError("This oracle gives labels only: the method declared access='label'. "
                              "Declare access = 'probs' in the method class if it needs probabilities.")
        if not isinstance(self._model, nn.Module):
            return self._endpoint(x, "probabilities")
        return self._logits(x).softmax(dim=1)

    def _endpoint(self, x: torch.Tensor, want: str) -> torch.Tensor:
        self._check_batch(x)
        endpoint = self._model
        answer = endpoint.labels(x) if want == "labels" else endpoint.probabilities(x)  # type: ignore[union-attr]
        self.queries += int(x.shape[0])
        return answer.to(x.device)

    @property
    def manifest_role(self) -> str:
        """The suspect's manifest role; only for loop guards that declared `access = "manifest"`.

        Raises:
            AccessError: the method declared less than "manifest" access.
            RuntimeError: the oracle was made without a role (the caller did not pass `manifest_role`).
        """
        if self.access != "manifest":
            raise AccessError(f"The manifest role is hidden at access='{self.access}': only loop guards that "
                              "declare access = 'manifest' (e.g. oracle_label) may read it.")
        if self._manifest_role is None:
            raise RuntimeError("This oracle was made without the suspect's manifest role; pass "
                               "Oracle(model, access='manifest', manifest_role=record['role']).")
        return self._manifest_role
