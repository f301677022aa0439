"""`crop`: a random resized crop of every query, back to the input size."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bench.checks import check
from bench.deploy.base import DEPLOYMENTS, InputTransform


@dataclass
class CropConfig:
    # [lo, hi]: the crop's area as a fraction of the image, drawn uniformly per query
    # (fpbench decision: [0.8, 1.0], a mild crop; torchvision's training default is [0.08, 1])
    scale: list[float] = field(default_factory=lambda: [0.8, 1.0])

    def __post_init__(self) -> None:
        ok = (len(self.scale) == 2 and all(isinstance(v, (int, float)) for v in self.scale)
              and 0 < self.scale[0] <= self.scale[1] <= 1)
        check("crop.scale", list(self.scale), ok, "two numbers [lo, hi] with 0 < lo <= hi <= 1")


@DEPLOYMENTS.register
class Crop(InputTransform):
    """A square crop of area fraction in `scale` at a random place, resized back (bilinear)."""

    name = "crop"
    Config = CropConfig
    test_config = CropConfig(scale=[0.5, 0.9])  # contract test: a crop that always moves pixels
    random = True

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        lo, hi = (float(v) for v in self.config.scale)
        if lo == hi == 1.0:
            return x
        n = x.shape[0]
        area = lo + (hi - lo) * torch.rand(n, generator=generator)
        side = area.sqrt()  # square crops: the side as a fraction of the image's
        # the crop's centre in [-1, 1] coordinates, anywhere that keeps the crop inside the image
        shift = (1 - side)[:, None] * (2 * torch.rand(n, 2, generator=generator) - 1)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = side
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp(0, 1)
