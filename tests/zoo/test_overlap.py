"""Overlap negatives (`overlap: F` on SADT/DADT, docs/threat_models.md): planning, the index draw, checks, a build.

An overlap negative trains independently (own seed, own init) on a set the size of its kind's usual
split (independent), of which the fraction F is drawn from the owner split. The fraction is part of the
model id and provenance; entries without `overlap:` keep the ids they always had.
"""

from __future__ import annotations

import pytest
import torch

from bench.config import ConfigError, load_recipe
from bench.evaluate import run_benchmark
from bench.zoo.plan import plan_zoo
from datamodules import DataConfig, SplitSizes, build_datamodule
from datamodules.lightning_base import FingerprintDataModule, owner_mix
from tests.conftest import REPO, SMOKE, smoke_overrides

FAKE_SPLIT_HASHES = {split: f"{split}-0000" for split in ("owner", "attacker", "independent", "test")}
# Ids planned (with FAKE_SPLIT_HASHES) before the option existed: a plain entry must keep them.
OLD_IDS = {"quickstart.yaml": ("c66a7bad78a1", "train(convnet,fashion_mnist:independent,seed=1,epochs=7)"),
           "fmnist_paper.yaml": ("21188228f3e0", "train(convnet,fashion_mnist:independent,seed=201,epochs=10)"),
           "smoke.yaml": ("285a02057a91", "train(convnet,digits:independent,seed=1,epochs=12)")}


def negatives(*entries: str, extra: tuple[str, ...] = ()) -> list:
    """The planned negatives of the smoke recipe with `zoo.negatives` set to `entries`."""
    cfg = load_recipe(SMOKE, [f"zoo.negatives=[{', '.join(entries)}]", *extra])
    return plan_zoo(cfg, FAKE_SPLIT_HASHES).by_role("negative")


# -- planning ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", sorted(OLD_IDS))
def test_entries_without_overlap_keep_their_old_ids(recipe):
    cfg = load_recipe(REPO / "recipes" / recipe)
    planned = {job.model_id: job for job in plan_zoo(cfg, FAKE_SPLIT_HASHES).by_role("negative")}
    model_id, provenance = OLD_IDS[recipe]
    assert planned[model_id].provenance == provenance
    assert all(job.overlap is None and job.group == job.kind for job in planned.values())
    assert all("overlap" not in job.record_base() for job in planned.values())


def test_each_fraction_is_another_model_with_its_fraction_in_id_provenance_and_group():
    plain, quarter, half, half_again = negatives("{kind: SADT, seed: 1}", "{kind: SADT, seed: 1, overlap: 0.25}",
                                                 "{kind: SADT, seed: 1, overlap: 0.5}", "{kind: DADT, arch: lenet, "
                                                 "seed: 1, overlap: 0.5}")
    assert plain.model_id == OLD_IDS["smoke.yaml"][0]
    assert len({plain.model_id, quarter.model_id, half.model_id, half_again.model_id}) == 4
    assert quarter.provenance == "train(convnet,digits:independent+owner(overlap=0.25),seed=1,epochs=12)"
    assert (quarter.kind, quarter.split, quarter.overlap, quarter.group) == ("SADT", "independent", 0.25,
                                                                            "SADT(overlap=0.25)")
    assert half_again.group == "DADT(overlap=0.5)" and half_again.arch == "lenet"
    assert quarter.record_base()["overlap"] == 0.25


def test_a_list_of_fractions_expands_and_one_equals_one_point_zero():
    jobs = negatives("{kind: SADT, seed: 1, overlap: [0.1, 0.25, 0.5]}")
    assert [job.overlap for job in jobs] == [0.1, 0.25, 0.5]
    assert len({job.model_id for job in jobs}) == 3
    (as_int,), (as_float,) = negatives("{kind: SADT, seed: 1, overlap: 1}"), negatives("{kind: SADT, seed: 1, overlap: 1.0}")
    assert as_int.model_id == as_float.model_id and isinstance(as_int.overlap, float)


def test_the_owner_split_content_is_part_of_an_overlap_id():
    cfg = load_recipe(SMOKE, ["zoo.negatives=[{kind: SADT, seed: 1, overlap: 0.25}, {kind: SADT, seed: 2}]"])
    other_owner = {**FAKE_SPLIT_HASHES, "owner": "owner-1111"}
    before, after = (plan_zoo(cfg, hashes).by_role("negative") for hashes in (FAKE_SPLIT_HASHES, other_owner))
    assert before[0].model_id != after[0].model_id  # trained partly on owner data
    assert before[1].model_id == after[1].model_id  # trained on the independent split only


@pytest.mark.parametrize(("entry", "message"), [
    ("{kind: SADT, seed: 1, overlap: 1.5}", r"zoo.negatives\[0\].overlap=1.5 must be a fraction in \[0, 1\]"),
    ("{kind: SADT, seed: 1, overlap: -0.1}", r"zoo.negatives\[0\].overlap=-0.1 must be a fraction in \[0, 1\]"),
    ("{kind: SADT, seed: 1, overlap: half}", r"zoo.negatives\[0\].overlap='half' must be a fraction"),
    ("{kind: SADT, seed: 1, overlap: true}", r"zoo.negatives\[0\].overlap=True must be a fraction"),
    ("{kind: SAST, seed: 1, overlap: 0.25}", r"zoo.negatives\[0\].overlap=0.25: .*a SAST negative trains on the "
                                             r"owner's data already. Fix: use kind SADT .* or drop 'overlap:'"),
    ("{kind: DAST, arch: lenet, seed: 1, overlap: 0.25}", r"a DAST negative trains on the owner's data already"),
    ("{kind: PTFT, seed: 1, overlap: 0.25}", r"a PTFT negative trains on the independent split after published"),
])
def test_bad_overlap_values_and_kinds_are_refused(entry, message):
    with pytest.raises(ConfigError, match=message):
        negatives(entry)


def test_an_imported_negative_cannot_have_an_overlap(tmp_path):
    with pytest.raises(ConfigError, match=r"zoo.negatives\[0\].overlap: an imported negative .* drop 'overlap:'"):
        negatives("{kind: SADT, weights: none.safetensors, overlap: 0.25}")


def test_more_owner_samples_than_the_owner_split_holds_is_refused_at_planning():
    # digits: owner 300, independent 400; overlap 1 would take 400 owner samples
    small_owner = ("data.splits.owner=300",)
    assert negatives("{kind: SADT, seed: 1, overlap: 0.75}", extra=small_owner)[0].overlap == 0.75  # 300: fits
    with pytest.raises(ConfigError, match=r"overlap=1 of train\(convnet,digits:independent\+owner\(overlap=1\).* "
                                          r"takes 400 of its 400 training samples from the owner split, which has "
                                          r"300. Fix: lower overlap to at most 0.75, or raise data.splits.owner"):
        negatives("{kind: SADT, seed: 1, overlap: 1}", extra=small_owner)


# -- the index draw ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_owner_mix_draws_the_stated_fraction_from_the_owner_split(overlap):
    owner, other = torch.arange(0, 700), torch.arange(700, 1100)
    mix = owner_mix(owner, other, overlap, seed=3)
    assert len(mix) == len(other) and len(set(mix.tolist())) == len(mix)  # the kind's size, no repeats
    from_owner = int(torch.isin(mix, owner).sum())
    assert from_owner == round(overlap * len(other))
    assert int(torch.isin(mix, other).sum()) == len(other) - from_owner


def test_owner_mix_is_a_function_of_the_seed():
    owner, other = torch.arange(0, 700), torch.arange(700, 1100)
    assert torch.equal(owner_mix(owner, other, 0.25, seed=3), owner_mix(owner, other, 0.25, seed=3))
    assert not torch.equal(owner_mix(owner, other, 0.25, seed=3), owner_mix(owner, other, 0.25, seed=4))


def test_owner_mix_refuses_a_bad_fraction_or_too_few_owner_samples():
    owner, other = torch.arange(0, 100), torch.arange(100, 500)
    with pytest.raises(ValueError, match=r"overlap=1.5 must be a fraction in \[0, 1\]"):
        owner_mix(owner, other, 1.5, seed=0)
    with pytest.raises(ValueError, match=r"takes 200 owner samples, but the owner split has 100. Fix: lower overlap "
                                         r"to at most 0.25, or raise data.splits.owner"):
        owner_mix(owner, other, 0.5, seed=0)


def test_the_digits_datamodule_mixes_its_own_owner_and_independent_indices(tmp_path):
    dm = build_datamodule(DataConfig(name="digits", splits=SplitSizes(owner=700, attacker=300, independent=400)),
                          str(tmp_path), 0)
    dm.setup()
    mix = dm.owner_mix_indices("independent", 0.25, seed=7)
    assert int(torch.isin(mix, dm.indices("owner")).sum()) == 100
    assert int(torch.isin(mix, dm.indices("independent")).sum()) == 300
    assert not torch.isin(mix, dm.indices("test")).any() and not torch.isin(mix, dm.indices("attacker")).any()
    served = dm.loader("independent", batch_size=1000, indices=mix).dataset
    assert torch.equal(torch.as_tensor(served.indices), mix)  # the loader serves the mix, not the split
    for split in ("owner", "test"):
        with pytest.raises(ValueError, match=f"got '{split}'"):
            dm.owner_mix_indices(split, 0.25, seed=7)


# -- a tiny digits zoo ---------------------------------------------------------------------------------------


def test_a_built_overlap_negative_trains_on_the_mix_and_results_carry_its_fraction(tmp_path, monkeypatch):
    drawn: list[tuple[str, float, int, torch.Tensor, torch.Tensor]] = []
    original = FingerprintDataModule.owner_mix_indices

    def spy(self, split, overlap, seed):  # the training set the job asked for, and the owner split beside it
        indices = original(self, split, overlap, seed)
        drawn.append((split, overlap, seed, indices, self.indices("owner")))
        return indices

    monkeypatch.setattr(FingerprintDataModule, "owner_mix_indices", spy)
    cfg = load_recipe(SMOKE, smoke_overrides(tmp_path, "zoo.name=overlap", "zoo.source.epochs=1", "compute.workers=1",
                                             "methods=[random]", "zoo.positives=[{attack: ftll, epochs: 1}]",
                                             "zoo.negatives=[{kind: SADT, seed: 1, epochs: 1, overlap: 0.5}, "
                                             "{kind: SAST, seed: 1, epochs: 1}]"))
    outcome = run_benchmark(cfg, progress=False)
    assert [(split, overlap, seed) for split, overlap, seed, *_ in drawn] == [("independent", 0.5, 1)]
    mix, owner = drawn[0][3], drawn[0][4]
    assert int(torch.isin(mix, owner).sum()) == len(mix) // 2  # half of what it trained on is the owner's
    (result,) = outcome.results.values()
    rows = {row["kind"]: row for row in result["per_model"] if row["role"] == "negative"}
    assert rows["SADT"]["overlap"] == 0.5 and rows["SADT"]["group"] == "SADT(overlap=0.5)"
    assert "overlap" not in rows["SAST"] and rows["SAST"]["group"] == "SAST"
