"""`variant=reference` pinned to the authors' control flow, one sample at a time, on linear classifiers.

`authors_segment` below is this project's own small re-statement of the loop in the authors'
`generate_unilateral_tra` (SPHelixLab/ADV-TRA, `ADV-TRA-Code/utils/adv_gen.py`, logit loss and
masked steps): one base sample, python scalars for the step sizes, autograd for the brake loss, the
two status flags and their `if`s in the authors' order. The batched scheduler must take the same
accept/reject decision for every sample, after the same number of iterations, trying the same step
sizes at every iteration, for l = 1..4. A linear model makes the boundaries exact and cheap.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.methods.adv_tra import AdvTraConfig
from bench.methods.adv_tra.pipeline import run_trajectories
from bench.methods.adv_tra.steps import DIVERGED, NO_SUCCESS, SUCCESS, Counter, StepRules

SHAPE = (1, 4, 4)  # tiny images; 16 pixels
CLASSES = 4
# Short optimisations keep the test fast and make every outcome (accept, diverge, run out) occur.
MAX_ITERATIONS = 40


def linear_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, CLASSES))
    with torch.no_grad():
        model[1].weight.mul_(3.0)  # margins that a few 0.05-pixel steps can cross
    return model.eval()


def reference_rules(half_length: int) -> StepRules:
    # Built by hand: AdvTraConfig refuses l = 1 with variant=reference, and the kernel is what is pinned.
    base = AdvTraConfig(variant="reference", max_iterations=MAX_ITERATIONS, brake_factor=0.95)
    rules = base.step_rules()
    rules.half_length = half_length
    return rules


def masked_step(x: torch.Tensor, step: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The authors' step: a pixel whose move would leave [0,1] does not move."""
    sign = grad.sign()
    moved = x - step * sign
    inside = 1.0 - (((moved > 1.0) | (moved < 0.0)) * 1.0)
    return x - step * (sign * inside)


def authors_segment(model: nn.Module, x0: torch.Tensor, target: int, rules: StepRules) -> dict:
    """One base sample through the authors' unilateral loop. Returns status, iterations and the steps tried."""
    length, total = rules.half_length, rules.max_iterations
    steps = [torch.tensor(rules.init_step) - torch.tensor(rules.init_step_decrement * i) for i in range(length)]
    tried = []
    for epoch in range(total):
        tried.append(torch.stack(steps).clone())
        images, grads = [x0], []
        x = x0
        for i in range(length):
            x_var = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(-model(x_var)[0, target], x_var)  # nll_loss on raw logits
            grads.append(grad)
            x = masked_step(x, steps[i], grad).detach()
            images.append(x)
        leaves = [s.clone() for s in steps]  # a leaf joins the graph only once the check loop reaches it
        loss = torch.tensor(0.0)
        undershoot = overshoot = 0
        for j in range(length):
            image = images[0] if j == 0 else masked_step(images[j], leaves[j], grads[j])
            leaves[j].requires_grad_(True)
            label = int(model(image).argmax(1))
            if j == length - 1:
                undershoot = 1 if (label != target and overshoot == 0) else 0
                if undershoot == 0 and overshoot == 0 and epoch > total / 4:
                    return {"status": SUCCESS, "iterations": epoch + 1, "tried": tried, "steps": torch.stack(steps)}
            else:
                if label == target:
                    overshoot = 1
                loss = loss + (leaves[j] * rules.brake_factor - leaves[j + 1]) ** 2
            if leaves[j] < 0:
                loss = loss - leaves[j]
        grads_of_steps = torch.autograd.grad(loss, [leaf for leaf in leaves if leaf.requires_grad],
                                             allow_unused=True) if loss.requires_grad else [None] * length
        for i in range(length):
            new = steps[i]
            if grads_of_steps[i] is not None:
                new = new - rules.step_lr * grads_of_steps[i]
            if undershoot == 1:
                new = new * (1 / rules.length_control_factor - rules.length_control_anneal * (epoch / total))
            if overshoot == 1:
                new = new * (rules.length_control_factor + rules.length_control_anneal * (epoch / total))
            steps[i] = new.detach()
        if any(float(s) > rules.max_step for s in steps):
            return {"status": DIVERGED, "iterations": epoch + 1, "tried": tried, "steps": None}
    return {"status": NO_SUCCESS, "iterations": total, "tried": tried, "steps": None}


def batched_segments(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, rules: StepRules) -> tuple:
    tried: dict[int, list[torch.Tensor]] = {i: [] for i in range(x.shape[0])}

    def trace(cand, seg, it, steps):
        for c, i, s in zip(cand.tolist(), it.tolist(), steps):
            assert len(tried[c]) == i  # one record per iteration, in order
            tried[c].append(s)

    run = run_trajectories(model, x, targets[:, None], rules, Counter(), bilateral=False, trace=trace)
    return run, tried


@pytest.mark.parametrize("half_length", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_variant_matches_the_authors_loop(half_length, seed):
    model = linear_model(seed)
    generator = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.6 * torch.rand(24, *SHAPE, generator=generator)
    labels = model(x).argmax(1)
    targets = (labels + torch.randint(1, CLASSES, labels.shape, generator=generator)) % CLASSES  # never the label
    rules = reference_rules(half_length)
    run, tried = batched_segments(model, x, targets, rules)
    outcomes = []
    for i in range(x.shape[0]):
        expected = authors_segment(model, x[i : i + 1], int(targets[i]), rules)
        outcomes.append(expected["status"])
        assert int(run.status[i]) == expected["status"], f"sample {i}: decision differs"
        assert len(tried[i]) == len(expected["tried"]), f"sample {i}: iterations differ"
        torch.testing.assert_close(torch.stack(tried[i]), torch.stack(expected["tried"]), rtol=1e-5, atol=1e-7)
        if expected["status"] == SUCCESS:
            assert int(run.iterations[i, 0]) == expected["iterations"]
            row = int((run.index == i).nonzero())
            torch.testing.assert_close(run.step_sizes[row, 0], expected["steps"], rtol=1e-5, atol=1e-7)
    if half_length > 1:
        assert SUCCESS in outcomes  # the toy is not degenerate: the loop does accept
    else:
        assert SUCCESS not in outcomes  # l = 1: x_0 (never the target here) is the authors' last check


def test_reference_rejects_a_crossing_before_the_last_sample():
    # l = 3, labels 0, 0, 1, 1 along x_0..x_3 toward target 1: x_2 crosses before x_3 (Eq. 3 rejects).
    rules = reference_rules(3)
    early, last = rules.checked_samples()
    hits = torch.tensor([[False, False, True, True]])
    assert last == 3 and bool(hits[:, early].any(1)) is True  # fpbench <= version 3 checked x_0, x_1: accepted
    paper = AdvTraConfig(variant="paper", half_length=3).step_rules()
    assert paper.checked_samples() == ([1, 2], 3)


def test_reference_half_length_one_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"half_length=1 with variant=reference.*variant=paper"):
        AdvTraConfig(variant="reference", half_length=1)
    AdvTraConfig(variant="paper", half_length=1)  # the equations work at l = 1


@pytest.mark.parametrize(("max_iterations", "gate"), [(300, 76), (10, 3), (8, 3), (2, 1)])
def test_reference_acceptance_gate_is_the_authors_epoch_above_t_over_4(max_iterations, gate):
    cfg = AdvTraConfig(max_iterations=max_iterations)
    assert cfg.resolved_min_iterations() == gate
    assert all((epoch > max_iterations / 4) == (epoch >= gate) for epoch in range(max_iterations))
