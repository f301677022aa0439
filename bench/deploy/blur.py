"""`blur`: Gaussian or median blur of every query (WRT's smoothing input-preprocessing attacks)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.checks import check, check_choice, check_range
from bench.deploy.base import DEPLOYMENTS, InputTransform

KINDS = ("gaussian", "median")


@dataclass
class BlurConfig:
    kind: str = "gaussian"  # gaussian | median (fpbench decision: gaussian, the milder one)
    kernel: int = 3  # odd window side in pixels (3: the smallest window; 8x8 digits have little room)
    sigma: float = 1.0  # gaussian std in pixels (torchvision's GaussianBlur range is 0.1..2); unused by median

    def __post_init__(self) -> None:
        check_choice("blur.kind", self.kind, KINDS)
        check("blur.kernel", self.kernel, isinstance(self.kernel, int) and self.kernel >= 1 and self.kernel % 2 == 1,
              "an odd whole number >= 1 (1 leaves the image as it is)")
        check_range("blur.sigma", self.sigma, 0, 100, low_open=True)


@DEPLOYMENTS.register
class Blur(InputTransform):
    """A `kernel` x `kernel` Gaussian (std `sigma`) or median filter per channel; borders reflected."""

    name = "blur"
    Config = BlurConfig
    test_config = BlurConfig(kind="median")  # contract test: the median path (the default is gaussian)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        k = int(self.config.kernel)
        if k == 1:
            return x
        pad = k // 2
        # reflect needs pad < side; replicate is the fallback for images smaller than the window
        mode = "reflect" if pad < min(x.shape[-2:]) else "replicate"
        padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
        if self.config.kind == "median":
            windows = padded.unfold(2, k, 1).unfold(3, k, 1)  # [B, C, H, W, k, k]
            return windows.reshape(*windows.shape[:4], k * k).median(dim=-1).values
        steps = torch.arange(k, dtype=torch.float32) - pad
        weights = torch.exp(-(steps**2) / (2 * float(self.config.sigma) ** 2))
        weights = weights / weights.sum()
        kernel = (weights[:, None] * weights[None, :]).to(device=x.device, dtype=x.dtype)
        channels = x.shape[1]
        return F.conv2d(padded, kernel.expand(channels, 1, k, k), groups=channels).clamp(0, 1)
