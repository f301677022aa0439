"""ADV-TRA's batched kernels: signed-gradient steps, step-size optimisation, bilateral extension.

Every function works on a batch of base samples at once, each with its own target class and its
own step sizes. The scheduler (`run_trajectories` in `bench/methods/adv_tra/pipeline.py`) chains them
into surface trajectories and takes a sample out of the batch as soon as it has finished or failed;
the method class (`bench/methods/adv_tra/__init__.py`) builds the `StepRules`, counts queries with a
`Counter` and reports failures by `FAILURE_NAMES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Why a base sample failed (codes stored per candidate; 0 = success).
SUCCESS, DIVERGED, NO_SUCCESS, END_NOT_TARGET = 0, 1, 2, 3
FAILURE_NAMES = {DIVERGED: "diverged", NO_SUCCESS: "no_success", END_NOT_TARGET: "end_not_target"}


@dataclass
class StepRules:
    """The resolved knobs the kernels need (built from `AdvTraConfig` with variant defaults applied).

    Attributes mirror `AdvTraConfig`; `full_brake_gradient` and `check_from_first_step` are the two
    places where `variant=paper` (True) and `variant=reference` (False) differ inside a segment.
    `min_iterations` is the first iteration (0-based) at which a segment may be accepted.
    """

    half_length: int
    loss: str
    boundary: str
    brake_factor: float
    length_control_factor: float
    length_control_anneal: float
    init_step: float
    init_step_decrement: float
    step_lr: float
    max_iterations: int
    min_iterations: int
    max_step: float
    full_brake_gradient: bool
    check_from_first_step: bool

    def checked_samples(self) -> tuple[list[int], int]:
        """Which of x_0..x_l Eq. 3 looks at: (indices that must not be the target yet, the one that must be).

        `paper`: x_1..x_{l-1} not yet, x_l now. `reference` follows the authors' loop, whose j-th check
        classifies x_0 for j = 0 and re-takes step j from x_j (i.e. x_{j+1}) for j >= 1: it looks at
        x_0, x_2, ..., x_l, the last of them being the one that must be the target. x_1 is never
        checked; with l = 1 the only check is x_0 (so `AdvTraConfig` refuses l = 1 for `reference`).
        """
        if self.check_from_first_step:
            return list(range(1, self.half_length)), self.half_length
        checked = [0, *range(2, self.half_length + 1)]
        return checked[:-1], checked[-1]


@dataclass
class Counter:
    """Cost bookkeeping: samples passed through the source (forward+backward, forward only)."""

    gradient_evaluations: int = 0
    forward_evaluations: int = 0


def target_loss(logits: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """Summed per-sample loss L(f(x), y_tgt) whose descent moves each sample toward its target."""
    if loss == "logit":  # the authors' nll_loss on raw logits = -logit_target
        return -logits.gather(1, targets[:, None]).sum()
    return F.cross_entropy(logits, targets, reduction="sum")


def logits_and_grad(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, loss: str, counter: Counter
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source logits at `x` and grad_x L per sample (losses are summed; samples are independent)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        (grad,) = torch.autograd.grad(target_loss(logits, targets, loss), x)  # no parameter .grad touched
    counter.gradient_evaluations += int(x.shape[0])
    return logits.detach(), grad


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, counter: Counter, batch_size: int = 1024) -> torch.Tensor:
    """Top-1 labels of the source for a batch (forward only)."""
    counter.forward_evaluations += int(x.shape[0])
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    return torch.cat([model(chunk).argmax(1) for chunk in x.split(batch_size)])


def take_step(x: torch.Tensor, step: torch.Tensor, grad: torch.Tensor, boundary: str) -> torch.Tensor:
    """Eq. 2: x - s * sign(grad), one step size per sample; pixels stay in [0,1]."""
    # addcmul is exact here: s * sign(g) is s, -s or 0, so there is one rounding as in x - s*sign(g)
    moved = torch.addcmul(x, step.view(-1, *([1] * (x.dim() - 1))), grad.sign(), value=-1.0)
    if boundary == "clamp":
        return moved.clamp_(0.0, 1.0)
    # "mask" (the authors' code): a pixel whose step would leave [0,1] does not move.
    return torch.where(moved == moved.clamp(0.0, 1.0), moved, x)


def initial_steps(batch: int, rules: StepRules, device: torch.device) -> torch.Tensor:
    """s_i = s_init - decrement * i for every sample: [B, l]."""
    index = torch.arange(rules.half_length, device=device, dtype=torch.float32)
    return (rules.init_step - rules.init_step_decrement * index).expand(batch, -1).clone()


def regulariser_grad(steps: torch.Tensor, rules: StepRules) -> torch.Tensor:
    """Closed-form gradient of L_brake + L_forward with respect to the step sizes [B, l].

    L_brake = sum_i (a_brk * s_i - s_{i+1})^2; L_forward = sum_i relu(-s_i). `variant=reference`
    lets the brake gradient reach only the earlier step of each pair (as the authors' code does).
    """
    grad = torch.zeros_like(steps)
    if steps.shape[1] >= 2:
        residual = rules.brake_factor * steps[:, :-1] - steps[:, 1:]
        grad[:, :-1] += 2.0 * rules.brake_factor * residual
        if rules.full_brake_gradient:
            grad[:, 1:] -= 2.0 * residual
    return grad - (steps < 0).to(steps.dtype)


def length_control(reached: torch.Tensor, early: torch.Tensor, iteration: torch.Tensor, rules: StepRules) -> torch.Tensor:
    """Per-sample factor on all step sizes: shrink on overshoot, else grow on undershoot (annealed).

    Overshoot (an earlier checked sample is already the target) wins: the authors' undershoot flag
    is only raised when no earlier sample crossed, so at most one factor applies, in both variants.
    `iteration` [B] is each sample's iteration within its current segment (the annealing clock).
    """
    progress = rules.length_control_anneal * iteration.double() / rules.max_iterations  # float64 as in Python
    grow = (1.0 / rules.length_control_factor - progress).float()
    shrink = (rules.length_control_factor + progress).float()
    grow_factor = torch.where(reached, torch.ones_like(grow), grow)
    return torch.where(early, shrink, grow_factor)


def extend_bilateral(
    model: nn.Module,
    unilateral: torch.Tensor,
    steps: torch.Tensor,
    targets: torch.Tensor,
    rules: StepRules,
    counter: Counter,
) -> torch.Tensor:
    """Continue x_0..x_l with the reversed steps: the bilateral trajectory x_0..x_2l ([B, 2l+1, ...]).

    The first l steps of `s + reverse(s)` reproduce the accepted unilateral trajectory, so only the
    l steps after the crossing are computed.
    """
    x = unilateral[:, -1]
    out = [unilateral]
    for step in steps.flip(1).unbind(1):
        _, grad = logits_and_grad(model, x, targets, rules.loss, counter)
        x = take_step(x, step, grad, rules.boundary)
        out.append(x[:, None])
    return torch.cat(out, 1)
