"""ADV-TRA's scheduler: every base sample runs its own segments, with no lock-step between samples.

A pool of at most `slots` samples advances one optimisation iteration at a time (one batched pass
through the source per trajectory sample). Each sample carries its own segment index, iteration
count, step sizes and target; when it is accepted it is extended to its bilateral segment and
starts its next segment in the following iteration, while the others carry on. A sample leaves
the pool when it has finished its last segment or failed, and the next candidate (in candidate
order) takes its slot. Nobody waits for the slowest sample of a segment, so the batch stays full.

Admission stops once `enough` successes exist. Candidates are admitted in order and each one is run
to its end unless it can no longer be among the first `enough` successes in candidate order (all
of those are known and it comes later): so those successes are the same whatever `slots` is, and
`slots=1` is the one-at-a-time baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bench.methods.adv_tra.steps import (
    DIVERGED,
    END_NOT_TARGET,
    NO_SUCCESS,
    SUCCESS,
    Counter,
    StepRules,
    extend_bilateral,
    initial_steps,
    length_control,
    logits_and_grad,
    predict,
    regulariser_grad,
    take_step,
)

UNRESOLVED = -1  # status of a candidate never admitted, or dropped once the first `enough` were known


@dataclass
class Trajectories:
    """Outcome for B candidates; the trajectories of the K successes are in candidate order.

    Attributes:
        status: [B] SUCCESS, a failure code, or UNRESOLVED.
        iterations: [B, m] optimisation iterations used per segment (0 for segments not reached).
        index: [K] candidate indices of the successes, ascending.
        inputs: [K, m * P, C, H, W] the segments, each stored whole (P samples per segment).
        step_sizes: [K, m, l] the accepted unilateral step sizes per segment.
        labels: [K, m * P] the labeller's labels (empty [K, 0] when no labeller was given).
    """

    status: torch.Tensor
    iterations: torch.Tensor
    index: torch.Tensor
    inputs: torch.Tensor
    step_sizes: torch.Tensor
    labels: torch.Tensor


@dataclass
class _Pool:
    """State of the samples in flight, one row each (rows are compacted when samples leave)."""

    cand: torch.Tensor  # [A] candidate index
    slot: torch.Tensor  # [A] row of the trajectory store
    seg: torch.Tensor  # [A] current segment
    it: torch.Tensor  # [A] iterations spent on the current segment
    steps: torch.Tensor  # [A, l]
    x0: torch.Tensor  # [A, C, H, W] start of the current segment
    grad0: torch.Tensor  # [A, C, H, W] gradient at x0 (x0 never moves within a segment)
    pred0: torch.Tensor  # [A] label of x0
    target: torch.Tensor  # [A]

    def select(self, rows: torch.Tensor) -> _Pool:
        return _Pool(*(getattr(self, name)[rows] for name in self.__dataclass_fields__))

    def extend(self, other: _Pool) -> _Pool:
        return _Pool(*(torch.cat([getattr(self, n), getattr(other, n)]) for n in self.__dataclass_fields__))


def run_trajectories(
    model: nn.Module,
    x_base: torch.Tensor,
    orders: torch.Tensor,
    rules: StepRules,
    counter: Counter,
    *,
    bilateral: bool,
    labeller: nn.Module | None = None,
    slots: int | None = None,
    enough: int | None = None,
    on_iteration: Callable[[int, int, int], None] | None = None,
    trace: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> Trajectories:
    """Surface (or single-segment) trajectories for the candidates `x_base` [B, C, H, W].

    Args:
        model: drives the steps (the source or its frozen copy), eval mode.
        orders: [B, m] target class of each segment.
        rules: resolved knobs (`AdvTraConfig.step_rules()`).
        counter: incremented with every source evaluation.
        bilateral: extend each accepted segment with the reversed steps (x_0..x_2l), and require
            its last sample to be the target; False stores unilateral segments x_0..x_l.
        labeller: labels each finished trajectory (the unmodified source); a segment end it does not
            label as the target fails the candidate (END_NOT_TARGET). None: no labels, no check.
        slots: samples in flight at once (None: all candidates).
        enough: stop admitting candidates once this many succeeded (None: try all).
        on_iteration: called with (samples in flight, successes, segments accepted so far) once per
            iteration (progress bars).
        trace: called before every iteration with (candidate, segment, iteration, step sizes [A, l])
            of the samples in flight: the step sizes that iteration tries (tests, diagnostics).
    """
    batch, segments = orders.shape
    length, device = rules.half_length, x_base.device
    per_segment = 2 * length + 1 if bilateral else length + 1
    slots = batch if slots is None else min(slots, batch)
    enough = batch if enough is None else enough
    status = torch.full((batch,), UNRESOLVED, dtype=torch.long, device=device)
    iterations = torch.zeros(batch, segments, dtype=torch.long, device=device)
    store = torch.zeros(slots, segments * per_segment, *x_base.shape[1:], device=device, dtype=x_base.dtype)
    store_steps = torch.zeros(slots, segments, length, device=device)
    done: dict[str, list[torch.Tensor]] = {"index": [], "inputs": [], "step_sizes": [], "labels": []}
    free = list(range(slots))
    admitted = successes = accepted_segments = 0
    pool: _Pool | None = None

    def fresh(cand: torch.Tensor, slot: torch.Tensor, seg: torch.Tensor, x0: torch.Tensor) -> _Pool:
        target = orders[cand, seg]
        logits0, grad0 = logits_and_grad(model, x0, target, rules.loss, counter)
        zeros = torch.zeros_like(cand)
        return _Pool(cand, slot, seg, zeros, initial_steps(cand.numel(), rules, device), x0, grad0, logits0.argmax(1),
                     target)

    while True:
        # -- admit candidates into free slots, in candidate order ---------------------------------
        room = min(len(free), batch - admitted) if successes < enough else 0
        if room > 0:
            cand = torch.arange(admitted, admitted + room, device=device)
            slot = torch.tensor(free[:room], dtype=torch.long, device=device)
            del free[:room]
            admitted += room
            new = fresh(cand, slot, torch.zeros_like(cand), x_base[cand])
            pool = new if pool is None else pool.extend(new)
        if pool is None or pool.cand.numel() == 0:
            break
        if on_iteration is not None:
            on_iteration(int(pool.cand.numel()), successes, accepted_segments)
        # -- one iteration of Alg. 1 for every sample in flight; drop the diverged and exhausted ----
        if trace is not None:
            trace(pool.cand.clone(), pool.seg.clone(), pool.it.clone(), pool.steps.clone())
        samples, accept, diverged, exhausted = _iterate(model, pool, rules, counter)
        for mask, code in ((diverged, DIVERGED), (exhausted, NO_SUCCESS)):
            if bool(mask.any()):
                status[pool.cand[mask]] = code
                iterations[pool.cand[mask], pool.seg[mask]] = pool.it[mask]
        leaving = accept | diverged | exhausted
        restarted = None
        if bool(accept.any()):
            accepted_segments += int(accept.sum())
            iterations[pool.cand[accept], pool.seg[accept]] = pool.it[accept]
            restarted, finished = _store_segments(
                model, pool.select(accept), torch.stack([s[accept] for s in samples], 1), rules, counter,
                store, store_steps, status, bilateral, per_segment, segments)
            if finished.cand.numel():
                successes += _collect(finished, store, store_steps, status, orders, labeller, per_segment, counter,
                                      done)
            free.extend(torch.cat([finished.slot, restarted.slot[restarted.failed]]).tolist())
        free.extend(pool.slot[diverged | exhausted].tolist())
        if bool(leaving.any()):
            pool = pool.select(~leaving)
        if restarted is not None and restarted.ok.any():
            ok = restarted.ok
            pool = pool.extend(fresh(restarted.cand[ok], restarted.slot[ok], restarted.seg[ok] + 1, restarted.end[ok]))
        if successes >= enough and _first_known(done, pool, enough):
            break  # whatever is still in flight comes after the first `enough` successes
    return _assemble(status, iterations, done, x_base, segments, per_segment, length)


def _iterate(model: nn.Module, pool: _Pool, rules: StepRules,
             counter: Counter) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """One iteration of Alg. 1 for every sample in `pool`: l steps from x_0 and the labels on the way.

    Samples still searching get new step sizes (`pool.steps`) and every sample one more iteration
    (`pool.it`), both in place. Returns (x_0..x_l, accepted, diverged, exhausted), masks over the pool.
    """
    length = rules.half_length
    samples, preds = [pool.x0], [pool.pred0]
    x = take_step(pool.x0, pool.steps[:, 0], pool.grad0, rules.boundary)
    samples.append(x)
    for i in range(1, length):
        logits, grad = logits_and_grad(model, x, pool.target, rules.loss, counter)
        preds.append(logits.argmax(1))
        x = take_step(x, pool.steps[:, i], grad, rules.boundary)
        samples.append(x)
    preds.append(predict(model, x, counter))
    hits = torch.stack(preds, 1) == pool.target[:, None]  # [A, l+1]
    early_index, last_index = rules.checked_samples()
    reached = hits[:, last_index]
    early = hits[:, early_index].any(1)
    accept = reached & ~early & (pool.it >= rules.min_iterations)
    steps = pool.steps - rules.step_lr * regulariser_grad(pool.steps, rules)
    steps = steps * length_control(reached, early, pool.it, rules)[:, None]
    pool.steps = torch.where(accept[:, None], pool.steps, steps)
    pool.it = pool.it + 1
    diverged = ~accept & ((steps > rules.max_step).any(1) | ~torch.isfinite(steps).all(1))
    exhausted = ~accept & ~diverged & (pool.it >= rules.max_iterations)
    return samples, accept, diverged, exhausted


@dataclass
class _Accepted:
    """Samples whose segment was accepted this iteration (one row each)."""

    cand: torch.Tensor
    slot: torch.Tensor
    seg: torch.Tensor
    end: torch.Tensor  # last sample of the stored segment: the start of the next one
    ok: torch.Tensor  # continues with its next segment
    failed: torch.Tensor  # failed at the bilateral end check


def _first_known(done: dict[str, list[torch.Tensor]], pool: _Pool, enough: int) -> bool:
    """True when every sample in flight comes after the `enough`-th success in candidate order."""
    last_needed = torch.cat(done["index"]).sort().values[enough - 1]
    return bool((pool.cand > last_needed).all())


def _store_segments(
    model: nn.Module,
    accepted: _Pool,
    unilateral: torch.Tensor,
    rules: StepRules,
    counter: Counter,
    store: torch.Tensor,
    store_steps: torch.Tensor,
    status: torch.Tensor,
    bilateral: bool,
    per_segment: int,
    segments: int,
) -> tuple[_Accepted, _Pool]:
    """Extend and store the accepted segments; split the samples into continuing and finished ones."""
    samples = unilateral
    end_ok = torch.ones(unilateral.shape[0], dtype=torch.bool, device=unilateral.device)
    if bilateral:
        samples = extend_bilateral(model, unilateral, accepted.steps, accepted.target, rules, counter)
        end_ok = predict(model, samples[:, -1], counter) == accepted.target
    status[accepted.cand[~end_ok]] = END_NOT_TARGET
    for seg in accepted.seg[end_ok].unique().tolist():  # one slice assignment per segment index
        rows = end_ok & (accepted.seg == seg)
        store[accepted.slot[rows], seg * per_segment : (seg + 1) * per_segment] = samples[rows]
        store_steps[accepted.slot[rows], seg] = accepted.steps[rows]
    last = accepted.seg == segments - 1
    restarted = _Accepted(accepted.cand, accepted.slot, accepted.seg, samples[:, -1], end_ok & ~last, ~end_ok)
    return restarted, accepted.select(end_ok & last)


def _collect(
    finished: _Pool,
    store: torch.Tensor,
    store_steps: torch.Tensor,
    status: torch.Tensor,
    orders: torch.Tensor,
    labeller: nn.Module | None,
    per_segment: int,
    counter: Counter,
    done: dict[str, list[torch.Tensor]],
) -> int:
    """Label finished trajectories, check every segment end against its target, keep the consistent."""
    inputs, steps = store[finished.slot], store_steps[finished.slot]
    count, samples = inputs.shape[:2]
    labels = torch.empty(count, 0, dtype=torch.long, device=inputs.device)
    consistent = torch.ones(count, dtype=torch.bool, device=inputs.device)
    if labeller is not None:
        # A segment end the labeller does not see as its target (a float tie resolved differently
        # by the frozen copy) fails the candidate: every stored label is the source's own.
        labels = predict(labeller, inputs.flatten(0, 1), counter).view(count, samples)
        consistent = (labels[:, per_segment - 1 :: per_segment] == orders[finished.cand]).all(1)
        labels = labels[consistent]
    status[finished.cand[consistent]] = SUCCESS
    status[finished.cand[~consistent]] = END_NOT_TARGET
    done["index"].append(finished.cand[consistent])
    done["inputs"].append(inputs[consistent])
    done["step_sizes"].append(steps[consistent])
    done["labels"].append(labels)
    return int(consistent.sum())


def _assemble(
    status: torch.Tensor,
    iterations: torch.Tensor,
    done: dict[str, list[torch.Tensor]],
    x_base: torch.Tensor,
    segments: int,
    per_segment: int,
    length: int,
) -> Trajectories:
    """Concatenate the successes and sort them into candidate order."""
    if not done["index"]:
        device = x_base.device
        return Trajectories(status, iterations, torch.empty(0, dtype=torch.long, device=device),
                            x_base.new_zeros(0, segments * per_segment, *x_base.shape[1:]),
                            x_base.new_zeros(0, segments, length), torch.empty(0, 0, dtype=torch.long, device=device))
    index = torch.cat(done["index"])
    order = index.argsort()
    return Trajectories(status, iterations, index[order], torch.cat(done["inputs"])[order],
                        torch.cat(done["step_sizes"])[order], torch.cat(done["labels"])[order])
