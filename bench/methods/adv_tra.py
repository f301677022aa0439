"""ADV-TRA: fingerprints made of adversarial trajectories that cross the source's decision boundaries."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from bench.methods.adv_tra_steps import (
    END_NOT_TARGET,
    FAILURE_NAMES,
    SUCCESS,
    Counter,
    StepRules,
    extend_bilateral,
    optimise_step_sizes,
    predict,
)
from bench.methods.base import METHODS, Fingerprint, FingerprintMethod, GenerationContext

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
SEED_STRIDE = 1_000_003  # generator seed = ctx.seed * SEED_STRIDE + config.seed


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
    min_iterations: int | None = None  # accept Eq. 3 only from this iteration; None: T // 4 reference, 0 paper
    max_step: float = 1.0  # a step size above this is divergence: the base sample fails (pixels)
    loss: str = "logit"  # logit: L = -logit_target (the authors) | ce: cross-entropy to the target
    boundary: str = "mask"  # mask: a pixel that would leave [0,1] stays (the authors) | clamp
    variant: str = "reference"  # reference: the authors' code quirks | paper: the equations
    threshold: float = 0.5  # a fingerprint is matched if its mutation rate is below this, in (0, 1]
    score: str = "detection_rate"  # detection_rate (paper: matched / N) | agreement (1 - mean mutation rate)
    batch_size: int | None = None  # candidates advanced together, chunk by chunk; None: all at once
    seed: int = 0  # combined with the fingerprint seed: ctx.seed * 1_000_003 + seed

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"adv_tra: {name}={value!r} is not allowed; choose one of {', '.join(allowed)}.")
        _require(self.n_fingerprints >= 1, "n_fingerprints", self.n_fingerprints, ">= 1")
        candidates = self.candidate_count()
        _require(candidates >= self.n_fingerprints, "candidates", self.candidates, ">= n_fingerprints, or null")
        _require(self.owner_pool is None or self.owner_pool >= candidates, "owner_pool", self.owner_pool,
                 f">= candidates ({candidates}), or null")
        _require(self.half_length >= 1, "half_length", self.half_length, ">= 1")
        _require(self.classes_spanned >= 2, "classes_spanned", self.classes_spanned, ">= 2")
        _require(0 < self.brake_factor <= 1, "brake_factor", self.brake_factor, "in (0, 1]")
        _require(0 < self.length_control_factor < 1, "length_control_factor", self.length_control_factor, "in (0, 1)")
        anneal = self.resolved_anneal()
        _require(0 <= anneal < 1 - self.length_control_factor, "length_control_anneal", self.length_control_anneal,
                 "in [0, 1 - length_control_factor) so that shrinking still shrinks, or null")
        _require(self.init_step > 0, "init_step", self.init_step, "> 0")
        last_init = self.init_step - self.init_step_decrement * (self.half_length - 1)
        _require(self.init_step_decrement >= 0 and last_init > 0, "init_step_decrement", self.init_step_decrement,
                 "in [0, init_step / (half_length - 1)) so that every initial step is positive")
        _require(self.step_lr >= 0, "step_lr", self.step_lr, ">= 0")
        _require(self.max_iterations >= 1, "max_iterations", self.max_iterations, ">= 1")
        _require(0 <= self.resolved_min_iterations() < self.max_iterations, "min_iterations", self.min_iterations,
                 "in [0, max_iterations), or null")
        _require(self.max_step > self.init_step, "max_step", self.max_step, "> init_step")
        _require(0 < self.threshold <= 1, "threshold", self.threshold, "in (0, 1]")
        _require(self.batch_size is None or self.batch_size >= 1, "batch_size", self.batch_size, ">= 1, or null")

    def candidate_count(self) -> int:
        """Base samples tried: `candidates`, or 2 x n_fingerprints (the code's 200 for 100)."""
        return self.candidates if self.candidates is not None else 2 * self.n_fingerprints

    def resolved_anneal(self) -> float:
        if self.length_control_anneal is not None:
            return self.length_control_anneal
        return REFERENCE_ANNEAL if self.variant == "reference" else 0.0

    def resolved_min_iterations(self) -> int:
        if self.min_iterations is not None:
            return self.min_iterations
        return self.max_iterations // 4 if self.variant == "reference" else 0

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
            independent_length_control=not paper,
        )


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"adv_tra: {name}={value!r} is out of range; it must be {allowed}.")


@METHODS.register("adv_tra")
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
    version = "1"
    Config = AdvTraConfig

    # -- generation -----------------------------------------------------------------------------
    def generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
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

        modes = {module: module.training for module in source.modules()}  # restored one by one afterwards
        source.eval()
        started = time.monotonic()
        counter = Counter()
        kept: list[dict[str, torch.Tensor]] = []
        failures = dict.fromkeys(FAILURE_NAMES.values(), 0)
        processed = successes = 0
        bar = tqdm(total=cfg.n_fingerprints, desc="adv_tra", unit="fp", disable=not ctx.progress, leave=False)
        try:
            while processed < candidates and successes < cfg.n_fingerprints:
                size = self._chunk_size(processed, candidates)
                rows = slice(processed, processed + size)
                status, chunk = self._run_chunk(source, x_base[rows], orders[rows], counter, bar)
                for code, name in FAILURE_NAMES.items():
                    failures[name] += int((status == code).sum())
                chunk["base_indices"] = choice[rows][status == SUCCESS]
                chunk["base_labels"] = y_base[rows][status == SUCCESS]
                kept.append(chunk)
                processed += size
                successes += int((status == SUCCESS).sum())
                bar.update(min(successes, cfg.n_fingerprints) - bar.n)
        finally:
            bar.close()
            for module, training in modes.items():
                module.train(training)
        if successes == 0:
            raise RuntimeError(f"adv_tra: no base sample out of {processed} produced a trajectory "
                               f"(failures: {failures}); try boundary=clamp, more max_iterations, or a larger max_step.")
        tensors = {key: torch.cat([c[key] for c in kept])[: cfg.n_fingerprints] for key in kept[0]}
        n_kept = int(tensors["inputs"].shape[0])
        if n_kept < cfg.n_fingerprints:
            log.warning("adv_tra: only %d of %d fingerprints succeeded (%d candidates).", n_kept, cfg.n_fingerprints,
                        processed)
        tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
        meta = {
            "n_fingerprints": n_kept,
            "n_requested": cfg.n_fingerprints,
            "candidates_tried": processed,
            "success_rate": successes / processed,
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
            "generation_seconds": time.monotonic() - started,
        }
        return Fingerprint(method=self.name, tensors=tensors, meta=meta)

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
        generator = torch.Generator().manual_seed(int(ctx.seed) * SEED_STRIDE + int(cfg.seed))
        choice = torch.randperm(x_pool.shape[0], generator=generator)[:candidates]
        orders = random_class_orders(y_pool.cpu()[choice], int(ctx.num_classes), cfg.segments(), generator)
        x_base = x_pool[choice.to(x_pool.device)].to(ctx.device)
        y_base = y_pool[choice.to(y_pool.device)].to(ctx.device)
        return x_base, y_base, orders.to(ctx.device), choice.to(ctx.device)

    def _chunk_size(self, processed: int, candidates: int) -> int:
        """Candidates advanced together next: `batch_size`, or all that are left (None)."""
        remaining = candidates - processed
        return remaining if self.config.batch_size is None else min(self.config.batch_size, remaining)

    def _run_chunk(
        self, source: nn.Module, x_base: torch.Tensor, orders: torch.Tensor, counter: Counter, bar: tqdm
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Advance a batch of base samples through all segments; return status and kept tensors."""
        cfg: AdvTraConfig = self.config
        rules = cfg.step_rules()
        batch, segments, per_segment = x_base.shape[0], orders.shape[1], cfg.samples_per_segment()
        device = x_base.device
        status = torch.full((batch,), SUCCESS, dtype=torch.long, device=device)
        inputs = torch.zeros(batch, segments * per_segment, *x_base.shape[1:], device=device, dtype=x_base.dtype)
        steps = torch.zeros(batch, segments, cfg.half_length, device=device)
        alive = torch.arange(batch, device=device)
        start = x_base
        for segment in range(segments):
            if alive.numel() == 0:
                break
            targets = orders[alive, segment]
            refresh = _progress_hook(bar, segment, segments)
            result = optimise_step_sizes(source, start, targets, rules, counter, refresh)
            ok = result.status == SUCCESS
            status[alive[~ok]] = result.status[~ok]
            alive, targets, samples, seg_steps = alive[ok], targets[ok], result.samples[ok], result.steps[ok]
            if cfg.trajectory != "unilateral":
                samples = extend_bilateral(source, samples, seg_steps, targets, rules, counter)
                end_ok = predict(source, samples[:, -1], counter) == targets
                status[alive[~end_ok]] = END_NOT_TARGET
                alive, samples, seg_steps = alive[end_ok], samples[end_ok], seg_steps[end_ok]
            inputs[alive, segment * per_segment : (segment + 1) * per_segment] = samples
            steps[alive, segment] = seg_steps
            start = samples[:, -1]
        # Final labels from one pass over whole trajectories; a segment end that is no longer its
        # target (a float tie resolved differently in another batch) fails the sample.
        inputs, steps, targets = inputs[alive], steps[alive], orders[alive]
        labels = predict(source, inputs.flatten(0, 1), counter).view(alive.numel(), inputs.shape[1])
        ends = labels[:, per_segment - 1 :: per_segment]
        consistent = (ends == targets).all(1)
        status[alive[~consistent]] = END_NOT_TARGET
        keep = consistent
        return status, {"inputs": inputs[keep], "labels": labels[keep], "segment_targets": targets[keep],
                        "step_sizes": steps[keep]}

    # -- verification ---------------------------------------------------------------------------
    def mutation_rates(self, fp: Fingerprint, suspect: Oracle) -> torch.Tensor:
        """Per fingerprint: fraction of its samples whose suspect label differs from the stored one."""
        inputs, labels = fp.tensors["inputs"], fp.tensors["labels"]
        count, samples = labels.shape
        predicted = suspect.labels(inputs.reshape(count * samples, *inputs.shape[2:])).view(count, samples)
        return (predicted.to(labels.device) != labels).float().mean(1)

    def measure(self, fp: Fingerprint, suspect: Oracle) -> dict[str, float]:
        """One batched query of all N x S samples; records both scores and the mean mutation rate."""
        mutation = self.mutation_rates(fp, suspect)
        figures = {
            "detection_rate": float((mutation < self.config.threshold).float().mean()),
            "agreement": float(1.0 - mutation.mean()),
            "mean_mutation_rate": float(mutation.mean()),
        }
        return {"score": figures[self.config.score], **figures}

    def score(self, fp: Fingerprint, suspect: Oracle) -> float:
        return self.measure(fp, suspect)["score"]


def random_class_orders(labels: torch.Tensor, num_classes: int, segments: int, generator: torch.Generator) -> torch.Tensor:
    """[B, m] distinct target classes per sample in random order, never the sample's true label."""
    keys = torch.rand(labels.shape[0], num_classes, generator=generator)
    keys[torch.arange(labels.shape[0]), labels.long()] = float("inf")  # the true class sorts last
    return keys.argsort(1)[:, :segments]


def _progress_hook(bar: tqdm, segment: int, segments: int):
    """A per-iteration callback that shows segment / iteration / active samples, redrawn at most 2x/s."""
    last = [0.0]

    def hook(iteration: int, active: int) -> None:
        if bar.disable:
            return
        bar.set_postfix(segment=f"{segment + 1}/{segments}", iteration=iteration, active=active, refresh=False)
        now = time.monotonic()
        if now - last[0] > 0.5:
            last[0] = now
            bar.refresh()

    return hook
