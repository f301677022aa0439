"""ADV-TRA: fingerprints made of adversarial trajectories that cross the source's decision boundaries."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from bench.checks import check, check_choice
from bench.methods.adv_tra.pipeline import UNRESOLVED, run_trajectories
from bench.methods.adv_tra.steps import FAILURE_NAMES, Counter, StepRules
from bench.methods.base import (
    METHODS,
    Fingerprint,
    FingerprintMethod,
    GenerationContext,
    kept_fraction_target,
)
from bench.nets.frozen import frozen_copy

if TYPE_CHECKING:
    from bench.oracle import Oracle

log = logging.getLogger(__name__)

CHOICES: dict[str, tuple[str, ...]] = {
    "trajectory": ("surface", "bilateral", "unilateral"),
    "loss": ("logit", "ce"),
    "boundary": ("mask", "clamp"),
    "variant": ("reference", "paper"),
    "score": ("detection_rate", "agreement"),
}
REFERENCE_ANNEAL = 0.049  # the code's annealing of a_lc over the iterations


@dataclass
class AdvTraConfig:
    """ADV-TRA hyperparameters. Symbols follow the paper; docs/methods/adv_tra.md maps them.

    Step sizes are in pixel units of [0,1] images. `brake_factor` defaults to the paper's 0.9; the
    authors' code uses 0.95. `threshold` and `score` act at verification only (no regeneration).
    """

    n_fingerprints: int = 100  # N: trajectories kept (the first N successes in candidate order)
    candidates: int | None = None  # base samples tried until N succeed; None: 2 x n_fingerprints
    owner_pool: int | None = None  # draw candidates from the first owner_pool owner samples; None: candidates
    trajectory: str = "surface"  # surface | bilateral | unilateral (the paper's ablation of trajectory types)
    half_length: int = 2  # l: steps of a unilateral trajectory; a bilateral segment has 2l steps
    classes_spanned: int = 10  # m+1: true class + m target classes of a surface trajectory; <= num_classes
    brake_factor: float = 0.9  # a_brk in L_brake (paper 0.9; the authors' code 0.95)
    length_control_factor: float = 0.9  # a_lc: steps x 1/a_lc on undershoot, x a_lc on overshoot
    length_control_anneal: float | None = None  # a_lc drift over iterations; None: 0.049 reference, 0 paper
    init_step: float = 0.05  # s_init (pixels)
    init_step_decrement: float = 0.002  # initial s_i = s_init - decrement * i (pixels)
    step_lr: float = 0.05  # learning rate of the gradient step on L_brake + L_forward
    max_iterations: int = 300  # T: iteration cap of the step-size optimisation, per segment
    min_iterations: int | None = None  # first iteration (0-based) that may accept; None: T//4 + 1 reference, 0 paper
    max_step: float = 1.0  # a step size above this is divergence: the base sample fails (pixels)
    loss: str = "logit"  # logit: L = -logit_target (the authors) | ce: cross-entropy to the target
    boundary: str = "mask"  # mask: a pixel that would leave [0,1] stays (the authors) | clamp
    variant: str = "reference"  # reference: the authors' code quirks | paper: the equations
    threshold: float = 0.5  # a fingerprint is matched if its mutation rate is below this, in (0, 1]
    score: str = "detection_rate"  # detection_rate (paper: matched / N) | agreement (1 - mean mutation rate)
    batch_size: int | None = None  # samples in flight at once (a finished one's slot goes to the next); None: all
    fast_source: bool = True  # optimise steps on a frozen copy (bench/nets/frozen.py); labels from the source
    seed: int = 0  # combined with the fingerprint seed: ctx.seed * 1_000_003 + seed (bench/seeding.py)

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            check_choice(f"adv_tra.{name}", getattr(self, name), allowed)
        check("adv_tra.n_fingerprints", self.n_fingerprints, self.n_fingerprints >= 1, ">= 1")
        candidates = self.candidate_count()
        check("adv_tra.candidates", self.candidates, candidates >= self.n_fingerprints, ">= n_fingerprints, or null")
        check("adv_tra.owner_pool", self.owner_pool, self.owner_pool is None or self.owner_pool >= candidates,
              f">= candidates ({candidates}), or null")
        check("adv_tra.half_length", self.half_length, self.half_length >= 1, ">= 1")
        if self.variant == "reference" and self.half_length == 1:
            raise ValueError("adv_tra: half_length=1 with variant=reference makes no trajectory: the authors' code "
                             "checks x_0 in place of the last sample x_1, so it accepts only a base sample the source "
                             "already labels as the target and grows the step of every other one until it diverges. "
                             "Use variant=paper for l = 1, or half_length >= 2.")
        check("adv_tra.classes_spanned", self.classes_spanned, self.classes_spanned >= 2, ">= 2")
        check("adv_tra.brake_factor", self.brake_factor, 0 < self.brake_factor <= 1, "in (0, 1]")
        check("adv_tra.length_control_factor", self.length_control_factor, 0 < self.length_control_factor < 1,
              "in (0, 1)")
        anneal = self.resolved_anneal()
        check("adv_tra.length_control_anneal", self.length_control_anneal, 0 <= anneal < 1 - self.length_control_factor,
              "in [0, 1 - length_control_factor) so that shrinking still shrinks, or null")
        check("adv_tra.init_step", self.init_step, self.init_step > 0, "> 0")
        last_init = self.init_step - self.init_step_decrement * (self.half_length - 1)
        check("adv_tra.init_step_decrement", self.init_step_decrement, self.init_step_decrement >= 0 and last_init > 0,
              "in [0, init_step / (half_length - 1)) so that every initial step is positive")
        check("adv_tra.step_lr", self.step_lr, self.step_lr >= 0, ">= 0")
        check("adv_tra.max_iterations", self.max_iterations, self.max_iterations >= 1, ">= 1")
        check("adv_tra.min_iterations", self.min_iterations, 0 <= self.resolved_min_iterations() < self.max_iterations,
              "in [0, max_iterations), or null (variant=reference: max_iterations // 4 + 1, so max_iterations >= 2)")
        check("adv_tra.max_step", self.max_step, self.max_step > self.init_step, "> init_step")
        check("adv_tra.threshold", self.threshold, 0 < self.threshold <= 1, "in (0, 1]")
        check("adv_tra.batch_size", self.batch_size, self.batch_size is None or self.batch_size >= 1, ">= 1, or null")

    def candidate_count(self) -> int:
        """Base samples tried: `candidates`, or 2 x n_fingerprints (the code's 200 for 100)."""
        return self.candidates if self.candidates is not None else 2 * self.n_fingerprints

    def resolved_anneal(self) -> float:
        if self.length_control_anneal is not None:
            return self.length_control_anneal
        return REFERENCE_ANNEAL if self.variant == "reference" else 0.0

    def resolved_min_iterations(self) -> int:
        """First iteration that may accept: the authors accept when `epoch > T/4` (0-based), i.e. T//4 + 1."""
        if self.min_iterations is not None:
            return self.min_iterations
        return self.max_iterations // 4 + 1 if self.variant == "reference" else 0

    def segments(self) -> int:
        """m: target classes per fingerprint (one for unilateral / bilateral trajectories)."""
        return self.classes_spanned - 1 if self.trajectory == "surface" else 1

    def samples_per_segment(self) -> int:
        """Stored samples per segment: x_0..x_l (unilateral) or x_0..x_2l (bilateral, surface)."""
        return self.half_length + 1 if self.trajectory == "unilateral" else 2 * self.half_length + 1

    def samples_per_fingerprint(self) -> int:
        """S = m x samples per segment: every segment is stored whole, its start repeating the last end."""
        return self.segments() * self.samples_per_segment()

    def trajectory_length(self) -> int:
        """The paper's ablation axis: classes spanned x samples (steps) per class, e.g. 10 x 4 = 40."""
        steps = self.samples_per_segment() - 1
        return (self.segments() + 1) * steps

    def step_rules(self) -> StepRules:
        paper = self.variant == "paper"
        return StepRules(
            half_length=self.half_length, loss=self.loss, boundary=self.boundary, brake_factor=self.brake_factor,
            length_control_factor=self.length_control_factor, length_control_anneal=self.resolved_anneal(),
            init_step=self.init_step, init_step_decrement=self.init_step_decrement, step_lr=self.step_lr,
            max_iterations=self.max_iterations, min_iterations=self.resolved_min_iterations(),
            max_step=self.max_step, full_brake_gradient=paper, check_from_first_step=paper,
        )


@METHODS.register
class AdvTra(FingerprintMethod):
    """ADV-TRA (Xu et al., "United We Stand, Divided We Fall", NeurIPS 2024): adversarial trajectories.

    Access: label-only. Each fingerprint is a surface trajectory: bilateral trajectories that walk a
    base sample across the source's decision boundaries through m random target classes, with step
    sizes that shrink toward each boundary and grow after it. Every sample keeps the source's label.
    Score: `detection_rate` (the paper) = fraction of fingerprints whose mutation rate (share of
    samples the suspect labels differently) is below `threshold`; `agreement` = 1 - mean mutation
    rate. Higher = more likely derived. Queries per suspect: N x S (100 x 45 = 4,500 at defaults).
    """

    name = "adv_tra"
    access = "label"
    version = "4"  # 2: pooled scheduler and frozen source copy; 3: column input gradients for single-channel
    # Query budgets: an item is one surface trajectory (its samples_per_fingerprint samples are queried together).
    budget_tensors = ("inputs", "labels", "segment_targets", "step_sizes", "base_indices", "base_labels")
    # first convs (bench/nets/frozen.py); only float rounding differed. 4: variant=reference follows the
    # authors' loop exactly (early check of x_0, x_2..x_{l-1}; one length-control factor; accept at T//4 + 1).
    Config = AdvTraConfig
    test_config = AdvTraConfig(n_fingerprints=3, candidates=10, max_iterations=60)  # contract tests: ~1 s on digits
    verification_fields = ("threshold", "score")
    # AUC/T1%F/T10%F in the paper's Table 2 (Xu et al., 2024)
    paper_results = {"cifar10": "1.00/1.00/1.00", "cifar100": "1.00/1.00/1.00", "imagenet": "0.96/0.88/0.90"}

    # -- generation -----------------------------------------------------------------------------
    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        """Trajectories from the owner's data, all candidates advancing together on `ctx.device`.

        Returns tensors `inputs` [N, S, C, H, W], `labels` [N, S] (the source's), `segment_targets`
        [N, m], `step_sizes` [N, m, l], `base_indices` / `base_labels` [N]; meta records the success
        rate, failures by reason, S, the paper's trajectory length and the source evaluations spent.

        Raises:
            ValueError: classes_spanned above the task's classes, or too few owner samples.
            RuntimeError: no candidate produced a trajectory.
        """
        cfg: AdvTraConfig = self.config
        num_classes = int(ctx.num_classes)
        if cfg.trajectory == "surface" and cfg.classes_spanned > num_classes:
            raise ValueError(f"adv_tra: classes_spanned={cfg.classes_spanned} exceeds the task's {num_classes} "
                             f"classes; set classes_spanned <= {num_classes}.")
        candidates = cfg.candidate_count()
        x_base, y_base, orders, choice = self._draw_candidates(ctx, candidates)

        counter = Counter()
        bar = tqdm(total=cfg.n_fingerprints, desc="adv_tra", unit="fp", disable=not ctx.progress, leave=False)
        try:
            engine, engine_info = frozen_copy(source, ctx.device) if cfg.fast_source else (source, {})
            run = run_trajectories(engine, x_base, orders, cfg.step_rules(), counter,
                                   bilateral=cfg.trajectory != "unilateral", labeller=source, slots=cfg.batch_size,
                                   enough=cfg.n_fingerprints, on_iteration=_progress_hook(bar, cfg.n_fingerprints))
        finally:
            bar.close()
        tried = int((run.status != UNRESOLVED).sum())
        failures = {name: int((run.status == code).sum()) for code, name in FAILURE_NAMES.items()}
        if run.index.numel() == 0:
            raise RuntimeError(f"adv_tra: no base sample out of {tried} produced a trajectory "
                               f"(failures: {failures}); try boundary=clamp, more max_iterations, or a larger max_step.")
        keep = slice(0, cfg.n_fingerprints)  # the first N successes in candidate order
        tensors = {"inputs": run.inputs[keep], "labels": run.labels[keep], "segment_targets": orders[run.index[keep]],
                   "step_sizes": run.step_sizes[keep], "base_indices": choice[run.index[keep]],
                   "base_labels": y_base[run.index[keep]]}
        n_kept = int(tensors["inputs"].shape[0])
        successes = int(run.index.numel())
        if n_kept < cfg.n_fingerprints:
            log.warning("adv_tra: only %d of %d fingerprints succeeded (%d candidates).", n_kept, cfg.n_fingerprints,
                        tried)
        iterations = run.iterations[run.index[keep]].float()
        tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
        meta = {
            "n_fingerprints": n_kept,
            "n_requested": cfg.n_fingerprints,
            "candidates_tried": tried,
            "success_rate": successes / tried,
            "mean_iterations_per_segment": float(iterations.mean()),
            "failures": failures,
            "samples_per_fingerprint": cfg.samples_per_fingerprint(),
            "samples_per_segment": cfg.samples_per_segment(),
            "segments": cfg.segments(),
            "trajectory_length": cfg.trajectory_length(),
            "queries_per_suspect": n_kept * cfg.samples_per_fingerprint(),
            "trajectory": cfg.trajectory,
            "variant": cfg.variant,
            "boundary": cfg.boundary,
            "loss": cfg.loss,
            "min_iterations": cfg.resolved_min_iterations(),
            "length_control_anneal": cfg.resolved_anneal(),
            "gradient_evaluations": counter.gradient_evaluations,
            "forward_evaluations": counter.forward_evaluations,
            "fast_source": engine_info,
        }
        return Fingerprint(method=self.name, tensors=tensors, meta=meta)

    def generation_target(self, fp: Fingerprint) -> dict[str, Any] | None:
        """Trajectories kept / n_fingerprints requested, floor 0.5 (docs/methods/adv_tra.md).

        Not the success rate (successes / candidates tried): that measures the candidate budget,
        and the scheduler stops trying once n_fingerprints have succeeded.
        """
        return kept_fraction_target("trajectories_kept_fraction", fp.meta["n_fingerprints"], fp.meta["n_requested"])

    def _draw_candidates(
        self, ctx: GenerationContext, candidates: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Base samples (seeded random order of the first `owner_pool`), true labels, target orders, indices."""
        cfg: AdvTraConfig = self.config
        x_pool, y_pool = ctx.owner_data(cfg.owner_pool if cfg.owner_pool is not None else candidates)
        if x_pool.shape[0] < candidates:
            raise ValueError(f"adv_tra: needs {candidates} candidate base samples but the owner split has "
                             f"{x_pool.shape[0]}; lower n_fingerprints or candidates.")
        # CPU generator: the same draws on any device; never the global RNG.
        generator = self.generator(ctx)
        choice = torch.randperm(x_pool.shape[0], generator=generator)[:candidates]
        orders = random_class_orders(y_pool.cpu()[choice], int(ctx.num_classes), cfg.segments(), generator)
        x_base = x_pool[choice.to(x_pool.device)].to(ctx.device)
        y_base = y_pool[choice.to(y_pool.device)].to(ctx.device)
        return x_base, y_base, orders.to(ctx.device), choice.to(ctx.device)

    # -- verification ---------------------------------------------------------------------------
    def mutation_rates(self, fp: Fingerprint, suspect: Oracle) -> torch.Tensor:
        """Per fingerprint: fraction of its samples whose suspect label differs from the stored one."""
        inputs, labels = fp.tensors["inputs"], fp.tensors["labels"]
        count, samples = labels.shape
        predicted = suspect.labels(inputs.reshape(count * samples, *inputs.shape[2:])).view(count, samples)
        return (predicted.to(labels.device) != labels).float().mean(1)

    def _measure(self, fp: Fingerprint, suspect: Oracle) -> dict[str, float]:
        """One batched query of all N x S samples; records both scores and the mean mutation rate."""
        mutation = self.mutation_rates(fp, suspect)
        figures = {
            "detection_rate": float((mutation < self.config.threshold).float().mean()),
            "agreement": float(1.0 - mutation.mean()),
            "mean_mutation_rate": float(mutation.mean()),
        }
        return {"score": figures[self.config.score], **figures}

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        return self._measure(fp, suspect)["score"]


def random_class_orders(labels: torch.Tensor, num_classes: int, segments: int, generator: torch.Generator) -> torch.Tensor:
    """[B, m] distinct target classes per sample in random order, never the sample's true label."""
    keys = torch.rand(labels.shape[0], num_classes, generator=generator)
    keys[torch.arange(labels.shape[0]), labels.long()] = float("inf")  # the true class sorts last
    return keys.argsort(1)[:, :segments]


def _progress_hook(bar: tqdm, requested: int):
    """A per-iteration callback: the bar counts fingerprints; the postfix shows samples in flight."""
    last = [0.0]

    def hook(active: int, successes: int, segments: int) -> None:
        if bar.disable:
            return
        bar.update(min(successes, requested) - bar.n)
        bar.set_postfix(in_flight=active, segments_done=segments, refresh=False)
        now = time.monotonic()
        if now - last[0] > 0.5:
            last[0] = now
            bar.refresh()

    return hook
