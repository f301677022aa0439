"""The universal adversarial perturbation behind `uap` (Moosavi-Dezfooli et al., "Universal adversarial
perturbations", CVPR 2017), with a batched L2 DeepFool (Moosavi-Dezfooli et al., CVPR 2016).

Not a method: nothing here is registered. Pixels are in [0,1] and every query clamps x + v to [0,1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bench.methods._common import input_gradient


def deepfool(model: nn.Module, x: torch.Tensor, steps: int, overshoot: float,
             candidates: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Batched L2 DeepFool: a small r with f(x + r) != f(x) and x + r in [0,1].

    Each iteration linearises the source around the current iterate and steps to the nearest of
    the boundaries between the label and the `candidates - 1` next most likely classes of x.

    Args:
        model: the classifier (eval mode); x: [B, C, H, W] in [0,1].
        steps: iterations at most; overshoot: r is scaled by 1 + overshoot (0.02 in DeepFool).
        candidates: classes considered (the top ones of x, label included).

    Returns:
        r ([B, C, H, W], overshoot included, x + r in [0,1]), the number of input-gradient
        evaluations, and a [B] mask: True where f(x + r) != f(x) (the search converged).
    """
    with torch.no_grad():
        classes = model(x).topk(candidates, dim=1).indices  # [B, K]; column 0: the label
    label, k = classes[:, 0], classes.shape[1]
    r = torch.zeros_like(x)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    evaluations = 0
    for _ in range(steps):
        # Clamped iterates: a step that leaves [0,1] is wasted on images (the plain DeepFool ignores the box).
        x_adv = (x + (1 + overshoot) * r).clamp(0.0, 1.0)
        with torch.no_grad():
            active &= model(x_adv).argmax(1) == label  # fooled = any class beats the label, candidate or not
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        # All K class gradients in one backward: K copies of the batch, copy j differentiates class j
        # (rows are independent in eval mode).
        copies = x_adv[idx].unsqueeze(0).repeat(k, *[1] * x.dim()).requires_grad_(True)  # [K, A, C, H, W]
        logits = model(copies.flatten(0, 1)).view(k, len(idx), -1)
        out = logits.gather(2, classes[idx].T.unsqueeze(2)).squeeze(2)  # [K, A]
        grads = input_gradient(out.sum(), copies).transpose(0, 1).flatten(2)  # [A, K, D]
        evaluations += len(idx) * k
        w = grads[:, 1:] - grads[:, :1]  # [A, K-1, D]
        f = (out[1:] - out[:1]).T.detach()  # [A, K-1], negative while unfooled
        norms = w.norm(dim=2) + 1e-8
        closest = (f.abs() / norms).argmin(1)
        rows = torch.arange(len(idx), device=x.device)
        w_l, f_l, n_l = w[rows, closest], f[rows, closest], norms[rows, closest]
        r[idx] += (((f_l.abs() + 1e-4) / n_l.square()).unsqueeze(1) * w_l).view(-1, *x.shape[1:])
    r = (x + (1 + overshoot) * r).clamp(0.0, 1.0) - x
    with torch.no_grad():
        fooled = model(x + r).argmax(1) != label
    return r, evaluations, fooled


def clean_labels(model: nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """The model's labels of x, in batches."""
    with torch.no_grad():
        return torch.cat([model(c).argmax(1) for c in x.split(batch)])


def fooling_rate(model: nn.Module, x: torch.Tensor, perturbation: torch.Tensor, batch: int = 1024,
                 clean: torch.Tensor | None = None) -> float:
    """Fraction of x whose label changes when the perturbation is added (and clamped to [0,1]).

    `clean`: the model's labels of x when the caller has them (saves one forward pass over x).
    """
    if len(x) == 0:
        return float("nan")
    clean = clean_labels(model, x, batch) if clean is None else clean
    with torch.no_grad():
        perturbed = torch.cat([model((c + perturbation).clamp(0, 1)).argmax(1) for c in x.split(batch)])
    return float((perturbed != clean).float().mean())


def universal_perturbation(model: nn.Module, x: torch.Tensor, xi: float, target_fooling_rate: float,
                           max_passes: int, batch_size: int, steps: int, overshoot: float, candidates: int,
                           generator: torch.Generator,
                           on_pass: Callable[[float], None] | None = None) -> tuple[torch.Tensor, dict]:
    """Algorithm 1 of the UAP paper in an L-inf ball of radius xi, batched.

    Passes over x in a seeded random order; for the samples x + v does not fool yet, DeepFool finds a
    minimal extra perturbation from x + v; v <- clamp(v + sum of those, -xi, xi). Batched: the
    DeepFool perturbations of up to `batch_size` unfooled samples are summed, then projected once
    (the original adds them one at a time). Perturbations whose DeepFool search did not converge
    are dropped (as in the UAP authors' code). Stops once the fooling rate on x reaches the target.

    Returns:
        v ([C, H, W], |v| <= xi): the pass-end v with the highest fooling rate (the rate fluctuates
        from pass to pass), and info: `fooling_rate` (of that v), `fooling_rates` (every pass),
        `passes`, `gradient_evaluations`, `deepfool_failures` (perturbations dropped).
    """
    v = torch.zeros_like(x[0])
    best, best_rate = v.clone(), 0.0  # v = 0 fools nothing
    info: dict = {"passes": 0, "fooling_rate": best_rate, "fooling_rates": [], "gradient_evaluations": 0,
                  "deepfool_failures": 0}
    clean = clean_labels(model, x)
    for _ in range(max_passes):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for idx in order.split(batch_size):
            with torch.no_grad():
                unfooled = model((x[idx] + v).clamp(0, 1)).argmax(1) == clean[idx]
            if not bool(unfooled.any()):
                continue
            shifted = (x[idx][unfooled] + v).clamp(0, 1)
            r, evaluations, converged = deepfool(model, shifted, steps, overshoot, candidates)
            info["gradient_evaluations"] += evaluations
            info["deepfool_failures"] += int((~converged).sum())
            if bool(converged.any()):
                v = (v + r[converged].sum(0)).clamp(-xi, xi)
        info["passes"] += 1
        rate = fooling_rate(model, x, v, clean=clean)
        info["fooling_rates"].append(rate)
        if rate > best_rate:
            best, best_rate = v.clone(), rate
        if on_pass is not None:
            on_pass(rate)
        if rate >= target_fooling_rate:
            break
    info["fooling_rate"] = best_rate
    return best, info
