"""scikit-learn's bundled 8x8 handwritten digits: offline, tiny, for smoke tests and quick demos."""

from __future__ import annotations

import torch

from datamodules.in_memory import InMemoryDataModule
from datamodules.specs import DIGITS


class DigitsDataModule(InMemoryDataModule):
    """`digits` (spec `DIGITS`): scikit-learn's 8x8 handwritten digits, loaded offline.

    A single pool: there is no official test set, so `test` is drawn from the same permutation as
    the other three splits, disjoint from them. Fractions are of the whole pool (1,797), and
    `splits.test: null` means "whatever owner, attacker and independent leave". The default
    fractions (0.5/0.1/0.4) leave almost nothing for test, so digits recipes set smaller ones, e.g.
    owner=0.4 attacker=0.1 independent=0.3 (test: the remaining 0.2).

    Pixels are stored as the raw 0..16 values (`pixel_max` 16), so x = value / 16 exactly.
    `augment` is a random crop with 1 pixel of padding (no flip: digits are not mirror-symmetric).
    """

    spec = DIGITS  # name, 1x8x8, 10 classes, one pool of 1,797
    mean = (0.3053,)
    std = (0.3760,)
    pixel_max = 16.0
    augment_padding = 1
    augment_flip = False

    def _load_arrays(self) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images.astype("uint8")).unsqueeze(1)  # [N,1,8,8], values 0..16
        labels = torch.from_numpy(digits.target.astype("int64"))
        return images, labels, None, None
