"""`jpeg`: JPEG compression of every query, in memory (WRT's input-preprocessing attack family)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from bench.checks import check_range
from bench.deploy.base import DEPLOYMENTS, InputTransform

_MODES = {1: "L", 3: "RGB"}  # channels -> PIL mode


@dataclass
class JpegConfig:
    quality: int = 75  # PIL's JPEG quality 1..100; 75 is PIL's default and the example (fpbench decision)

    def __post_init__(self) -> None:
        check_range("jpeg.quality", self.quality, 1, 100)


@DEPLOYMENTS.register
class Jpeg(InputTransform):
    """JPEG at `quality`: each query -> uint8 -> JPEG (PIL, in memory) -> float [0,1]; grey or RGB."""

    name = "jpeg"
    Config = JpegConfig
    test_config = JpegConfig(quality=30)  # contract test: strong compression

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        channels = x.shape[1]
        if channels not in _MODES:
            raise ValueError(f"jpeg: queries have {channels} channels; JPEG takes 1 (grey) or 3 (RGB). "
                             "Drop jpeg from the deployment for this data.")
        pixels = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(pixels)
        for i, image in enumerate(pixels):
            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if channels == 1 else image, _MODES[channels]).save(
                buffer, format="JPEG", quality=int(self.config.quality))
            buffer.seek(0)
            decoded = np.asarray(Image.open(buffer).convert(_MODES[channels]))
            out[i] = decoded[..., None] if channels == 1 else decoded
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0
