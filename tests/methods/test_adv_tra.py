"""ADV-TRA on small digits CNNs: trajectory invariants, failures, determinism, scores, save/load."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import bench.methods.adv_tra  # noqa: F401  (registers adv_tra)
from bench.methods.adv_tra import AdvTra, AdvTraConfig, random_class_orders
from bench.methods.adv_tra.pipeline import UNRESOLVED, run_trajectories
from bench.methods.adv_tra.steps import DIVERGED, SUCCESS, Counter
from bench.methods.base import METHODS, Fingerprint, GenerationContext
from bench.nets import build_model
from bench.oracle import Oracle
from bench.perf.adv_tra_batching import TensorSplits
from tests.methods.conftest import fit

OWNER = 1000  # digits 0..999 train the source and seed fingerprints; the rest is "other" data


def convnet(seed: int) -> nn.Module:
    return build_model("convnet", in_channels=1, num_classes=10, image_size=8, mean=(0.3053,), std=(0.3760,), seed=seed)


@pytest.fixture(scope="module")
def digits(one_thread) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    return torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16, torch.tensor(data.target)


@pytest.fixture(scope="module")
def source(digits) -> nn.Module:
    x, y = digits
    return fit(convnet(0), x[:OWNER], y[:OWNER], seed=0, epochs=8)


@pytest.fixture(scope="module")
def independent(digits) -> nn.Module:
    x, y = digits
    return fit(convnet(1), x[:OWNER], y[:OWNER], seed=1, epochs=8)


def make_ctx(digits, seed: int = 0) -> GenerationContext:
    x, y = digits
    return GenerationContext(datamodule=TensorSplits(x[:OWNER], y[:OWNER]), seed=seed, device=torch.device("cpu"),
                             num_classes=10, progress=False)


def generate(source: nn.Module, digits, seed: int = 0, **config) -> Fingerprint:
    return AdvTra(AdvTraConfig(**config)).generate(source, make_ctx(digits, seed))


SURFACE = dict(n_fingerprints=6, candidates=30)  # reference variant, logit loss, mask: the defaults
UNILATERAL = dict(n_fingerprints=12, candidates=30, trajectory="unilateral", variant="paper")
BILATERAL = dict(n_fingerprints=8, candidates=30, trajectory="bilateral", half_length=3, boundary="clamp", loss="ce")


@pytest.fixture(scope="module")
def fingerprints(source, digits) -> dict[str, tuple[dict, Fingerprint]]:
    return {name: (cfg, generate(source, digits, **cfg))
            for name, cfg in [("surface", SURFACE), ("unilateral", UNILATERAL), ("bilateral", BILATERAL)]}


def segment_length(cfg: dict) -> int:
    half = cfg.get("half_length", 2)
    return half + 1 if cfg.get("trajectory", "surface") == "unilateral" else 2 * half + 1


@pytest.mark.parametrize("kind", ["surface", "unilateral", "bilateral"])
def test_shapes_and_meta(fingerprints, kind):
    cfg, fp = fingerprints[kind]
    segments = 9 if kind == "surface" else 1
    samples = segments * segment_length(cfg)  # each segment stored whole: 9 x 5 = 45 at defaults
    n = fp.tensors["inputs"].shape[0]
    assert 1 <= n <= cfg["n_fingerprints"]
    assert fp.tensors["inputs"].shape == (n, samples, 1, 8, 8)
    assert fp.tensors["labels"].shape == (n, samples)
    assert fp.tensors["segment_targets"].shape == (n, segments)
    assert fp.tensors["step_sizes"].shape == (n, segments, cfg.get("half_length", 2))
    assert fp.meta["samples_per_fingerprint"] == samples
    assert fp.meta["queries_per_suspect"] == n * samples
    steps = segment_length(cfg) - 1
    assert fp.meta["trajectory_length"] == (segments + 1) * steps
    assert 0 < fp.meta["success_rate"] <= 1
    assert fp.meta["gradient_evaluations"] > 0


@pytest.mark.parametrize("kind", ["surface", "unilateral", "bilateral"])
def test_trajectory_invariants(fingerprints, source, digits, kind):
    cfg, fp = fingerprints[kind]
    inputs, labels, targets = fp.tensors["inputs"], fp.tensors["labels"], fp.tensors["segment_targets"]
    n, samples = labels.shape
    per_segment = segment_length(cfg)
    with torch.no_grad():
        predicted = source(inputs.flatten(0, 1)).argmax(1).view(n, samples)
    assert torch.equal(labels, predicted)  # every stored label is the source's
    assert torch.equal(predicted[:, per_segment - 1 :: per_segment], targets)  # segment ends are their targets
    assert inputs.min() >= 0 and inputs.max() <= 1
    ends, starts = inputs[:, per_segment - 1 : -1 : per_segment], inputs[:, per_segment::per_segment]
    assert torch.equal(ends, starts)  # segment k+1 starts where segment k ended
    x, y = digits
    assert torch.equal(inputs[:, 0], x[fp.tensors["base_indices"]])
    assert not (targets == y[fp.tensors["base_indices"]][:, None]).any()  # never the true class
    for row in targets:  # distinct target classes
        assert len(set(row.tolist())) == row.numel()


def test_unilateral_first_crossing_is_last_sample(fingerprints):
    cfg, fp = fingerprints["unilateral"]
    labels, targets = fp.tensors["labels"], fp.tensors["segment_targets"][:, 0]
    assert (labels[:, -1] == targets).all()
    assert not (labels[:, :-1] == targets[:, None]).any()  # Eq. 3 under variant=paper


def test_paper_steps_positive_and_non_increasing(fingerprints):
    _, fp = fingerprints["unilateral"]
    steps = fp.tensors["step_sizes"]
    assert (steps > 0).all()
    assert (steps[..., 1:] <= steps[..., :-1]).all()


def test_source_detected_and_label_only(fingerprints, source):
    _, fp = fingerprints["surface"]
    oracle = Oracle(source, access="label")
    figures = AdvTra(AdvTraConfig()).measure(fp, oracle)
    assert figures["detection_rate"] == 1.0 and figures["score"] == 1.0
    assert figures["agreement"] == 1.0 and figures["mean_mutation_rate"] == 0.0
    assert oracle.queries == fp.tensors["labels"].numel()  # one batched N x S query


def test_scores_recorded_both_ways(fingerprints, independent):
    _, fp = fingerprints["surface"]
    by_detection = AdvTra(AdvTraConfig(score="detection_rate")).measure(fp, Oracle(independent))
    by_agreement = AdvTra(AdvTraConfig(score="agreement")).measure(fp, Oracle(independent))
    assert by_detection["score"] == by_detection["detection_rate"]
    assert by_agreement["score"] == by_agreement["agreement"]
    assert {k: v for k, v in by_detection.items() if k != "score"} == {k: v for k, v in by_agreement.items() if k != "score"}
    assert by_detection["agreement"] == pytest.approx(1 - by_detection["mean_mutation_rate"])
    assert by_detection["mean_mutation_rate"] > 0  # an independent model does not copy every trajectory label
    # detection_rate is a step function of the threshold; at 1.0 only fully mutated fingerprints miss
    loose = AdvTra(AdvTraConfig(threshold=1.0)).measure(fp, Oracle(independent))["detection_rate"]
    strict = AdvTra(AdvTraConfig(threshold=0.01)).measure(fp, Oracle(independent))["detection_rate"]
    assert strict <= by_detection["detection_rate"] <= loose


def test_save_load_round_trip(fingerprints, independent, tmp_path):
    _, fp = fingerprints["surface"]
    method = AdvTra(AdvTraConfig(score="agreement"))
    loaded = Fingerprint.load(fp.save(tmp_path / "fp"))
    assert loaded.method == "adv_tra" and loaded.meta == fp.meta
    assert fp.tensors.keys() == loaded.tensors.keys()
    for key, value in fp.tensors.items():
        assert torch.equal(value, loaded.tensors[key]), key
    assert method.measure(loaded, Oracle(independent)) == method.measure(fp, Oracle(independent))


def test_same_seed_same_fingerprint(source, digits):
    cfg = dict(n_fingerprints=4, candidates=8, trajectory="bilateral", variant="paper")
    first, second = generate(source, digits, **cfg), generate(source, digits, **cfg)
    other = generate(source, digits, seed=1, **cfg)
    for key in first.tensors:
        assert torch.equal(first.tensors[key], second.tensors[key]), key
    assert not torch.equal(first.tensors["base_indices"], other.tensors["base_indices"])


def test_batched_equals_one_at_a_time(source, digits):
    # Samples are independent, so batching changes only the speed: the first N successes in candidate
    # order are the same fingerprints whether candidates run all at once, in chunks, or one by one.
    cfg = dict(n_fingerprints=3, candidates=10, classes_spanned=6, max_iterations=60)
    runs = [generate(source, digits, batch_size=size, **cfg) for size in (None, 4, 1)]
    for run in runs[1:]:
        for key, value in runs[0].tensors.items():
            assert torch.equal(value, run.tensors[key]), key
    # One at a time stops at the third success, failures skipped on the way (how many depends on the CPU's
    # floats: measured 1); 4 slots run every candidate up to it too, and stop before the last (measured 4 of 10).
    one_at_a_time = runs[2].meta["candidates_tried"]
    assert one_at_a_time == 3 + sum(runs[2].meta["failures"].values())
    assert one_at_a_time <= runs[1].meta["candidates_tried"] < 10


def test_source_untouched(digits):
    model = convnet(3)  # untrained is fine: only the bookkeeping is checked
    model.train()
    model.features[1].eval()  # a frozen BatchNorm inside a training model: mixed modes are restored as they were
    before = copy.deepcopy(model.state_dict())
    try:
        generate(model, digits, n_fingerprints=2, candidates=4, trajectory="unilateral", max_iterations=30)
    except RuntimeError:
        pass  # an untrained model may yield nothing; the source must still be left as it was
    assert model.training and model.features[0].training and not model.features[1].training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class Unreachable(nn.Module):
    """The source with some classes made unreachable (a huge negative logit offset)."""

    def __init__(self, model: nn.Module, blocked: list[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("offset", torch.zeros(10))
        self.offset[blocked] = -1e4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + self.offset


def test_divergent_sample_dropped_not_raised(source, digits):
    x, _ = digits
    rules = AdvTraConfig(variant="paper").step_rules()
    targets = torch.tensor([9, 9, 9])
    result = run_trajectories(Unreachable(source, [9]), x[:3], targets[:, None], rules, Counter(), bilateral=False)
    assert (result.status == DIVERGED).all() and (result.iterations[:, 0] < rules.max_iterations).all()
    # in a generate run, samples whose target is unreachable fail; the others still make fingerprints
    blocked = [5, 6, 7, 8, 9]
    fp = generate(Unreachable(source, blocked).eval(), digits, n_fingerprints=10, candidates=20, trajectory="unilateral")
    assert fp.meta["failures"]["diverged"] >= 1
    assert fp.tensors["segment_targets"].max() < 5


def test_reachable_samples_succeed_next_to_failing_ones(source, digits):
    x, y = digits
    blocked = [c for c in range(10) if c not in (int(y[0]), int(y[1]))]  # digits 0 and 1 stay reachable
    rules = AdvTraConfig(variant="paper").step_rules()
    targets = torch.tensor([int(y[1]), blocked[0]])
    result = run_trajectories(Unreachable(source, blocked), x[:2], targets[:, None], rules, Counter(), bilateral=False)
    assert result.status.tolist() == [SUCCESS, DIVERGED]


def test_no_success_raises(digits):
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.arange(10.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0 * x.flatten(1).sum(1, keepdim=True) + self.bias

    with pytest.raises(RuntimeError, match="no base sample"):
        generate(Constant(), digits, n_fingerprints=2, candidates=4, trajectory="unilateral")


@pytest.mark.parametrize(
    "field, value",
    [
        ("trajectory", "helix"), ("loss", "mse"), ("boundary", "wrap"), ("variant", "code"), ("score", "auc"),
        ("n_fingerprints", 0), ("candidates", 5), ("owner_pool", 10), ("half_length", 0), ("classes_spanned", 1),
        ("brake_factor", 0.0), ("brake_factor", 1.5), ("length_control_factor", 1.0),
        ("length_control_anneal", 0.2), ("init_step", 0.0), ("init_step_decrement", 0.05), ("step_lr", -0.1),
        ("max_iterations", 0), ("min_iterations", 300), ("max_step", 0.01), ("threshold", 0.0),
        ("threshold", 1.5), ("batch_size", 0),
    ],
)
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        AdvTraConfig(**{"n_fingerprints": 10, field: value})


def test_config_defaults_follow_protocol():
    cfg = AdvTraConfig()
    assert (cfg.n_fingerprints, cfg.candidate_count(), cfg.half_length, cfg.classes_spanned) == (100, 200, 2, 10)
    assert (cfg.brake_factor, cfg.length_control_factor, cfg.init_step, cfg.step_lr) == (0.9, 0.9, 0.05, 0.05)
    assert (cfg.max_iterations, cfg.threshold, cfg.loss, cfg.boundary) == (300, 0.5, "logit", "mask")
    assert cfg.resolved_min_iterations() == 76 and cfg.samples_per_fingerprint() == 45
    assert cfg.trajectory_length() == 40
    assert all(f.type in ("int", "float", "str", "bool", "int | None", "float | None")
               for f in dataclasses.fields(AdvTraConfig))
    assert METHODS.get("adv_tra") is AdvTra and AdvTra.access == "label"


def test_classes_spanned_capped(source, digits):
    with pytest.raises(ValueError, match="classes_spanned=11"):
        generate(source, digits, n_fingerprints=2, classes_spanned=11)


@pytest.mark.perf
def test_perf_batched_vs_sequential(source, digits):
    from bench.perf.adv_tra_batching import compare_batched_vs_sequential

    x, y = digits
    # both runs ask for the same fingerprints from the same candidates: the same work, no luck
    figures = compare_batched_vs_sequential(source, x[:OWNER], 20, y=y[:OWNER], candidates=80)
    print(f"\nadv_tra generation on digits convnet ({figures['threads']} threads): "
          f"batched {figures['batched']['fingerprints_per_second']:.2f} fp/s "
          f"({figures['batched']['fingerprints']} fp, success {figures['batched']['success_rate']:.2f}), "
          f"sequential {figures['sequential']['fingerprints_per_second']:.3f} fp/s, ratio {figures['ratio']:.1f}x "
          f"(per candidate tried {figures['candidate_ratio']:.1f}x)")
    assert figures["batched"]["fingerprints"] > 0 and figures["sequential"]["fingerprints"] > 0


def test_samples_do_not_wait_for_each_other(source, digits):
    # No lock-step between samples: the pool runs exactly as many iterations as the slowest single
    # sample spends over all its segments, fewer than the sum over segments of each one's slowest.
    x, y = digits
    cfg = AdvTraConfig(n_fingerprints=20, candidates=20, classes_spanned=4, variant="paper")
    orders = random_class_orders(y[:20], 10, cfg.segments(), torch.Generator().manual_seed(0))
    in_flight: list[int] = []
    run = run_trajectories(source, x[:20], orders, cfg.step_rules(), Counter(), bilateral=True,
                           on_iteration=lambda active, successes, segments: in_flight.append(active))
    assert (run.status != UNRESOLVED).all() and run.index.numel() > 0
    assert len(in_flight) == int(run.iterations.sum(1).max())
    assert len(in_flight) < int(run.iterations.max(0).values.sum())
    assert in_flight == sorted(in_flight, reverse=True)  # slots=None: all admitted at once, none added later
