"""Datamodules: splits (disjoint, sized, seeded), hashes, items, augmentation, errors, registry.

Real data for digits (scikit-learn) and fashion_mnist (Debian's IDX files); synthetic stand-ins in
torchvision's on-disk formats for CIFAR and an ImageFolder tree for imagenet.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

import datamodules.fashion_mnist as fashion_module
from bench.registry import RegistryError
from datamodules import (
    DATAMODULES,
    DataConfig,
    DataNotFoundError,
    FingerprintDataModule,
    SplitSizes,
    build_datamodule,
)
from datamodules.in_memory import random_crop_flip

SPLITS = ("owner", "attacker", "independent", "test")
FASHION_DIR = Path(fashion_module.DEBIAN_FASHION_MNIST_DIR)
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), reason="apt-get install dataset-fashion-mnist"
)
DIGITS_SPLITS = SplitSizes(owner=0.4, attacker=0.1, independent=0.3, test=None)


def make(name: str, tmp_path: Path, seed: int = 0, **cfg) -> FingerprintDataModule:
    splits = cfg.pop("splits", DIGITS_SPLITS if name == "digits" else SplitSizes())
    dm = build_datamodule(DataConfig(name=name, splits=splits, **cfg), str(tmp_path), seed)
    dm.setup()
    return dm


def assert_disjoint(dm: FingerprintDataModule) -> None:
    by_pool: dict[str, list[int]] = {}
    for split in SPLITS:
        by_pool.setdefault(dm.pool(split), []).extend(dm.indices(split).tolist())
    for pool, indices in by_pool.items():
        assert len(indices) == len(set(indices)), f"splits overlap in the {pool} pool"


# -- registry and config -------------------------------------------------------------------------
def test_registry_lists_every_datamodule_with_a_description():
    # The built-ins stay (recipes and model ids name them); a new datamodule needs no edit here.
    assert {"cifar10", "cifar100", "digits", "fashion_mnist", "imagenet"} <= set(DATAMODULES.names())
    for name, description in DATAMODULES.describe().items():
        cls = DATAMODULES.get(name)
        assert description and cls.name == name
        assert len(cls.mean) == len(cls.std) == cls.in_channels


def test_build_datamodule_unknown_name_suggests_the_closest():
    with pytest.raises(RegistryError, match="Did you mean 'digits'"):
        build_datamodule(DataConfig(name="digts"), "/nonexistent", 0)


def test_dataconfig_is_a_strict_omegaconf_structured_config(tmp_path):
    cfg = OmegaConf.structured(DataConfig)
    OmegaConf.set_struct(cfg, True)
    assert cfg.splits.test is None and cfg.image_size is None
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["name=digits", "splits.test=0.2", "image_size=64"]))
    assert cfg.splits.test == 0.2 and cfg.image_size == 64
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["splits.test=null"]))
    assert cfg.splits.test is None
    with pytest.raises(ConfigKeyError, match="tset"):
        OmegaConf.merge(cfg, OmegaConf.from_dotlist(["splits.tset=0.2"]))
    with pytest.raises(ValidationError):
        OmegaConf.merge(cfg, OmegaConf.from_dotlist(["batch_size=many"]))
    cfg.splits.owner, cfg.splits.attacker, cfg.splits.independent = 0.4, 0.1, 0.3
    dm = build_datamodule(cfg, str(tmp_path), 0)  # a DictConfig works as well as the dataclass
    assert isinstance(dm.cfg, DataConfig) and dm.split_size("test") == 361


# -- digits (single pool) --------------------------------------------------------------------------
def test_digits_splits_are_disjoint_and_cover_the_requested_fractions(tmp_path):
    dm = make("digits", tmp_path)
    sizes = {split: dm.split_size(split) for split in SPLITS}
    assert sizes == {"owner": 718, "attacker": 179, "independent": 539, "test": 361}  # test: the remainder
    assert {dm.pool(s) for s in SPLITS} == {"train"}
    assert_disjoint(dm)
    x, y = dm.tensors("owner")
    assert x.shape == (718, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() == 0 and x.max() == 1 and set(y.tolist()) == set(range(10))


def test_digits_pixels_are_the_sklearn_values_over_16(tmp_path):
    from sklearn.datasets import load_digits

    dm = make("digits", tmp_path)
    x, y = dm.tensors("test", limit=7)
    rows = dm.indices("test")[:7].numpy()
    np.testing.assert_array_equal(x[:, 0].numpy(), (load_digits().images[rows] / 16).astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), load_digits().target[rows])


def test_same_seed_same_splits_and_hashes_other_seed_differs(tmp_path):
    first, second, other = (
        make("digits", tmp_path, 3),
        make("digits", tmp_path, 3),
        make("digits", tmp_path, 4),
    )
    for split in SPLITS:
        torch.testing.assert_close(first.tensors(split), second.tensors(split), rtol=0, atol=0)
    assert first.split_hashes() == second.split_hashes()
    assert all(first.split_hash(s) != other.split_hash(s) for s in SPLITS)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in first.split_hashes().values())


def test_split_draw_and_hash_are_pinned_across_processes_and_machines(tmp_path):
    # Golden values: same seed -> same indices and hash on any machine (no Python hash(), no RNG state).
    dm = make("digits", tmp_path, 3)
    assert dm.indices("owner")[:5].tolist() == [133, 1773, 404, 864, 1209]
    assert dm.split_hash("owner") == "0249c94677e32f6d3fab962311f9419c7b6a0ea433312feb60e1f05f98103861"


def test_changing_a_later_split_keeps_the_earlier_ones(tmp_path):
    base = make("digits", tmp_path, splits=SplitSizes(owner=500, attacker=100, independent=300, test=200))
    more = make("digits", tmp_path, splits=SplitSizes(owner=500, attacker=300, independent=0, test=100))
    assert base.split_hash("owner") == more.split_hash("owner")
    assert more.split_size("independent") == 0 and more.tensors("independent")[0].shape == (0, 1, 8, 8)


@pytest.mark.parametrize(
    ("splits", "match"),
    [
        (
            SplitSizes(owner=1000, attacker=500, independent=500, test=None),
            r"independent=500 = 2000 samples.*has 1797.*Fix",
        ),
        (
            SplitSizes(owner=0.5, attacker=0.5, independent=0.1, test=0.1),
            r"has 1797.*Fix: lower data\.splits",
        ),
        (SplitSizes(owner=1000, attacker=797, independent=0, test=None), r"none for test.*Fix"),
        (
            SplitSizes(owner=0.0001, attacker=0.1, independent=0.1, test=None),
            r"owner=0.0001.*gives 0 samples",
        ),
        (SplitSizes(owner=10.5, attacker=0.1, independent=0.1, test=None), r"whole numbers.*Fix: use 10"),
        (SplitSizes(owner=-1, attacker=0.1, independent=0.1, test=None), r"owner=-1.0 is invalid"),
    ],
)
def test_bad_split_sizes_raise_with_the_fix(tmp_path, splits, match):
    dm = build_datamodule(DataConfig(name="digits", splits=splits), str(tmp_path), 0)
    with pytest.raises(ValueError, match=match):
        dm.setup()


def test_unknown_split_lists_the_valid_ones(tmp_path):
    dm = make("digits", tmp_path)
    for call in (dm.tensors, dm.dataset, dm.loader, dm.split_hash, dm.split_size):
        with pytest.raises(ValueError, match="'train'.*owner, attacker, independent, test"):
            call("train")


def test_setup_is_idempotent(tmp_path, monkeypatch):
    dm = make("digits", tmp_path)
    monkeypatch.setattr(type(dm), "_load_arrays", lambda self: pytest.fail("setup reloaded the data"))
    before = dm.indices("owner")
    dm.setup("fit")
    assert dm.indices("owner") is before


def test_tensors_match_dataset_items_and_limit(tmp_path):
    dm = make("digits", tmp_path, augment=True)
    x, y = dm.tensors("attacker", limit=20)
    assert x.shape == (20, 1, 8, 8)
    dataset = dm.dataset("attacker")  # train=False: never augmented, even with augment on
    for i in (0, 7, 19):
        item_x, item_y = dataset[i]
        assert (
            torch.equal(item_x, x[i]) and item_y.dtype == torch.int64 and item_y.ndim == 0 and item_y == y[i]
        )
    assert len(dataset) == dm.split_size("attacker")
    assert dm.tensors("attacker", limit=0)[0].shape == (0, 1, 8, 8)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_loader_batch_sizes_shuffle_seed_and_lightning_hooks(tmp_path):
    dm = make("digits", tmp_path, batch_size=32, eval_batch_size=100)
    assert next(iter(dm.loader("test")))[0].shape == (100, 1, 8, 8)
    assert next(iter(dm.train_dataloader()))[0].shape == (32, 1, 8, 8)
    assert len(dm.train_dataloader().dataset) == dm.split_size("owner")
    assert len(dm.val_dataloader().dataset) == len(dm.test_dataloader().dataset) == dm.split_size("test")
    labels = [
        torch.cat([y for _, y in dm.loader("owner", shuffle=True, generator_seed=s)]) for s in (1, 1, 2)
    ]
    assert torch.equal(labels[0], labels[1]) and not torch.equal(labels[0], labels[2])
    assert torch.equal(torch.cat([y for _, y in dm.loader("owner")]), dm.tensors("owner")[1])
    assert len(list(dm.loader("owner", batch_size=100, drop_last=True))) == 7


def test_augmentation_is_on_the_fly_when_on_and_absent_when_off(tmp_path):
    def two_passes(dm: FingerprintDataModule) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.cat([x for x, _ in dm.loader("owner", train=True)]) for _ in range(2))

    plain = make("digits", tmp_path, augment=False)
    first, second = two_passes(plain)
    assert torch.equal(first, second) and torch.equal(first, plain.tensors("owner")[0])
    augmented = make("digits", tmp_path, augment=True)
    first, second = two_passes(augmented)
    assert not torch.equal(first, second) and not torch.equal(first, plain.tensors("owner")[0])
    assert first.shape == plain.tensors("owner")[0].shape and first.min() >= 0 and first.max() <= 1


def test_random_crop_flip_shifts_within_the_padding_and_mirrors():
    x = torch.rand(64, 3, 6, 6)
    cropped = random_crop_flip(x, padding=2, flip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):  # every output is one 6x6 window of its padded input
        windows = [padded[i, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(cropped[i], w) for w in windows)
    flipped = random_crop_flip(x, padding=0, flip=True)
    same = [torch.equal(flipped[i], x[i]) for i in range(64)]
    assert all(s or torch.equal(flipped[i], x[i].flip(-1)) for i, s in enumerate(same))
    assert 0 < sum(same) < 64


# -- fashion_mnist (real IDX files) -----------------------------------------------------------------
@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> FingerprintDataModule:
    return make("fashion_mnist", tmp_path_factory.mktemp("empty"))


@needs_fashion
def test_fashion_default_splits_come_from_the_train_pool_test_is_the_test_set(fashion):
    sizes = {split: fashion.split_size(split) for split in SPLITS}
    assert sizes == {"owner": 30000, "attacker": 6000, "independent": 24000, "test": 10000}
    assert [fashion.pool(s) for s in SPLITS] == ["train", "train", "train", "test"]
    assert torch.equal(fashion.indices("test"), torch.arange(10000))
    assert_disjoint(fashion)
    x, y = fashion.tensors("owner", limit=256)
    assert x.shape == (256, 1, 28, 28) and x.min() >= 0 and x.max() == 1 and 0 <= y.min() and y.max() <= 9
    item_x, item_y = fashion.dataset("owner")[255]
    assert torch.equal(item_x, x[255]) and item_y == y[255]


@needs_fashion
def test_fashion_counts_and_fractions_and_hash_stability(fashion, tmp_path):
    splits = SplitSizes(owner=1000, attacker=0.001, independent=0, test=0.01)
    dm = make("fashion_mnist", tmp_path, splits=splits)
    assert [dm.split_size(s) for s in SPLITS] == [1000, 60, 0, 100]
    assert_disjoint(dm)
    assert dm.split_hash("owner") == make("fashion_mnist", tmp_path, splits=splits).split_hash("owner")
    assert torch.equal(dm.indices("owner"), fashion.indices("owner")[:1000])  # same seed: a prefix
    assert dm.split_hash("owner") != fashion.split_hash("owner")


@needs_fashion
def test_fashion_hash_is_sha256_of_header_pixels_and_labels(fashion):
    with (
        gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz") as images,
        gzip.open(FASHION_DIR / "t10k-labels-idx1-ubyte.gz") as labels,
    ):
        pixels, targets = images.read()[16:], np.frombuffer(labels.read()[8:], dtype=np.uint8)
    expected = hashlib.sha256(b"uint8[1, 28, 28]" + pixels + targets.astype("<i8").tobytes()).hexdigest()
    assert (
        fashion.split_hash("test")
        == expected
        == "acbe7db2a105f5984082d4ccbee659ec49130e69c78758b1788a84b0c78ce6e9"
    )


@needs_fashion
def test_fashion_oversize_request_names_the_pool_and_fix(tmp_path):
    dm = build_datamodule(DataConfig(name="fashion_mnist", splits=SplitSizes(test=20000)), str(tmp_path), 0)
    with pytest.raises(ValueError, match=r"test=20000.*test pool has 10000.*Fix"):
        dm.setup()


@needs_fashion
def test_fashion_augment_is_crop_only_and_changes_per_pass(fashion, tmp_path):
    dm = make(
        "fashion_mnist",
        tmp_path,
        augment=True,
        splits=SplitSizes(owner=64, attacker=0, independent=0, test=10),
    )
    first, second = (next(iter(dm.loader("owner", train=True, batch_size=64)))[0] for _ in range(2))
    assert first.shape == (64, 1, 28, 28) and not torch.equal(first, second)


def test_fashion_missing_files_list_the_places_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_module, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "no-debian"))
    dm = build_datamodule(DataConfig(name="fashion_mnist"), str(tmp_path), 0)
    with pytest.raises(DataNotFoundError) as info:
        dm.setup()
    message = str(info.value)
    for place in ("fashion_mnist", "FashionMNIST/raw", "no-debian", "apt-get install dataset-fashion-mnist"):
        assert place in message
    assert f"{tmp_path}/\n" in message and "data.download=true" in message
    assert isinstance(info.value, FileNotFoundError)


def test_fashion_reads_plain_idx_files_from_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_module, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "no-debian"))
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 5)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            bytes([0, 0, 8, 3]) + np.array([n, 28, 28], ">u4").tobytes() + images.tobytes()
        )
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1]) + np.array([n], ">u4").tobytes() + labels.tobytes()
        )
    dm = make("fashion_mnist", tmp_path, splits=SplitSizes(owner=10, attacker=10, independent=10))
    x, y = dm.tensors("test")
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(images)) and y.tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]


# -- CIFAR (synthetic files in torchvision's pickle format) ------------------------------------------
def write_fake_cifar(root: Path, name: str, per_batch: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, files, label_key, meta = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            "labels",
            ("batches.meta", "label_names"),
        )
    else:
        folder, files, label_key, meta = (
            "cifar-100-python",
            ["train"],
            "fine_labels",
            ("meta", "fine_label_names"),
        )
    (root / folder).mkdir(parents=True)
    written = {}
    for file_name, n in [(f, per_batch if name == "cifar10" else 5 * per_batch) for f in files] + [
        ("test", per_batch)
    ]:
        file_name = "test_batch" if (file_name == "test" and name == "cifar10") else file_name
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(root / folder / file_name, "wb") as handle:
            pickle.dump({"data": data, label_key: labels}, handle)
        written[file_name] = data
    with open(root / folder / meta[0], "wb") as handle:
        pickle.dump({meta[1]: [f"class{i}" for i in range(10)]}, handle)
    return written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_torchvision_files(tmp_path, monkeypatch, name):
    import torchvision.datasets.cifar

    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True
    )  # fake md5s
    written = write_fake_cifar(tmp_path, name)
    dm = make(name, tmp_path, splits=SplitSizes(owner=50, attacker=0.2, independent=0.3, test=None))
    assert [dm.split_size(s) for s in SPLITS] == [50, 20, 30, 20] and dm.num_classes == (
        10 if name == "cifar10" else 100
    )
    assert_disjoint(dm)
    x, _ = dm.tensors("test")
    test_data = written["test_batch" if name == "cifar10" else "test"]
    assert x.shape == (20, 3, 32, 32)
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(test_data).view(20, 3, 32, 32))
    assert dm.split_hash("owner") == make(name, tmp_path, splits=dm.cfg.splits).split_hash("owner")


def test_cifar_missing_data_raises_data_not_found(tmp_path):
    dm = build_datamodule(DataConfig(name="cifar10"), str(tmp_path), 0)
    with pytest.raises(DataNotFoundError, match=r"(?s)cifar-10-batches-py.*data\.download=true.*tar -xzf"):
        dm.setup()


# -- imagenet (a tiny ImageFolder tree) ------------------------------------------------------------
@pytest.fixture
def imagenet_dir(tmp_path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        for cls in ("n01", "n02"):
            (tmp_path / "imagenet" / part / cls).mkdir(parents=True)
            for i in range(6):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "imagenet" / part / cls / f"img{i}.png")
    return tmp_path


def test_imagenet_folder_splits_items_and_hashes(imagenet_dir):
    splits = SplitSizes(owner=6, attacker=2, independent=4, test=None)
    dm = make("imagenet", imagenet_dir, splits=splits, image_size=16)
    assert dm.num_classes == 2 and dm.image_size == 16
    assert [dm.split_size(s) for s in SPLITS] == [6, 2, 4, 12]
    assert_disjoint(dm)
    x, y = dm.tensors("owner", limit=3)
    assert x.shape == (3, 3, 16, 16) and x.min() >= 0 and x.max() <= 1 and y.dtype == torch.int64
    item_x, item_y = dm.dataset("owner")[2]
    assert torch.equal(item_x, x[2]) and item_y == y[2]
    again = make("imagenet", imagenet_dir, splits=splits, image_size=16)
    assert again.split_hashes() == dm.split_hashes()
    assert make("imagenet", imagenet_dir, seed=1, splits=splits, image_size=16).split_hash(
        "owner"
    ) != dm.split_hash("owner")


def test_imagenet_augment_changes_per_pass(imagenet_dir):
    dm = make(
        "imagenet",
        imagenet_dir,
        splits=SplitSizes(owner=6, attacker=0, independent=0),
        image_size=16,
        augment=True,
    )
    first, second = (next(iter(dm.loader("owner", train=True, batch_size=6)))[0] for _ in range(2))
    assert first.shape == (6, 3, 16, 16) and not torch.equal(first, second)
    assert torch.equal(torch.cat([x for x, _ in dm.loader("owner")]), dm.tensors("owner")[0])


def test_imagenet_missing_folder_raises_data_not_found(tmp_path):
    dm = build_datamodule(DataConfig(name="imagenet"), str(tmp_path), 0)
    with pytest.raises(DataNotFoundError, match=r"(?s)imagenet/train.*ln -s"):
        dm.setup()
