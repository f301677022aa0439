"""Out-of-distribution query sets for model extraction (`extract.query_data`): the attacker's own
unlabeled inputs that do not come from the task's distribution.

- `transformed`: the attacker's split under strong, seeded input transforms: a random element of
  the dihedral group (rotation by a multiple of 90 degrees, then a horizontal flip with probability
  1/2), colour inversion (x -> 1 - x) with probability 1/2, and Gaussian pixel noise.
- `synthetic`: images that never came from the task: a few Gaussian blobs (random centre, width and
  per-channel brightness) on a random background, plus smooth low-frequency noise.

Both are pure functions of the seed (a CPU `torch.Generator`), the same on every device, and keep
every pixel in [0, 1] (docs/attacks.md, "Out-of-distribution extraction").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TRANSFORM_NOISE_STD = 0.1  # pixel noise of `transformed` (fpbench decision: visible, yet the shapes survive)
MAX_BLOBS = 4  # blobs per `synthetic` image: the first always, each other one with probability 1/2
BLOB_SIGMA = (0.05, 0.35)  # blob width as a fraction of the image side (from dots to washes)
BLOB_AMPLITUDE = (0.3, 1.0)  # per-channel blob brightness added to the background
BACKGROUND = (0.0, 0.3)  # per-image, per-channel background level
NOISE_GRID = 4  # low-frequency noise: a NOISE_GRID x NOISE_GRID grid upsampled bilinearly
NOISE_STD = 0.15  # its amplitude
CHUNK = 256  # synthetic images made at once (bounds memory on large images)


def transformed_queries(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`x` [N,C,H,W] in [0,1] under seeded dihedral transforms, inversion and noise; same shape, in [0,1].

    Every image gets fresh noise, so no output equals its input even when the drawn rotation, flip
    and inversion are all the identity. Non-square images only rotate by 0 or 180 degrees.
    """
    n, _, height, width = x.shape
    turns = torch.randint(0, 4, (n,), generator=generator)
    if height != width:
        turns = (turns % 2) * 2  # a quarter turn would change the image's shape
    flips = torch.rand(n, generator=generator) < 0.5
    inverts = torch.rand(n, generator=generator) < 0.5
    noise = torch.randn(x.shape, generator=generator) * TRANSFORM_NOISE_STD
    out = x.detach().cpu().float().clone()
    for k in range(1, 4):
        chosen = turns == k
        if chosen.any():
            out[chosen] = torch.rot90(out[chosen], k, dims=(2, 3))
    out[flips] = torch.flip(out[flips], dims=(3,))
    out[inverts] = 1.0 - out[inverts]
    return (out + noise).clamp_(0.0, 1.0)


def _uniform(shape: tuple[int, ...], bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator)


def _synthetic_chunk(n: int, channels: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """`n` synthetic images [n,C,H,W] in [0,1] (see the module docstring)."""
    background = _uniform((n, channels, 1, 1), BACKGROUND, generator)
    centres = torch.rand((n, MAX_BLOBS, 2), generator=generator)  # (row, column) in [0,1]
    sigmas = _uniform((n, MAX_BLOBS), BLOB_SIGMA, generator)
    amplitudes = _uniform((n, MAX_BLOBS, channels), BLOB_AMPLITUDE, generator)
    active = torch.rand((n, MAX_BLOBS), generator=generator) < 0.5
    active[:, 0] = True  # at least one blob per image
    coarse = torch.randn((n, channels, NOISE_GRID, NOISE_GRID), generator=generator) * NOISE_STD
    rows = torch.linspace(0.0, 1.0, height).view(1, 1, height, 1)
    cols = torch.linspace(0.0, 1.0, width).view(1, 1, 1, width)
    dist2 = (rows - centres[..., 0, None, None]) ** 2 + (cols - centres[..., 1, None, None]) ** 2  # [n,B,H,W]
    blobs = torch.exp(-dist2 / (2 * sigmas[..., None, None] ** 2)) * active[..., None, None]
    images = background + torch.einsum("nbhw,nbc->nchw", blobs, amplitudes)
    images = images + F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True)
    return images.clamp_(0.0, 1.0)


def synthetic_queries(n: int, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """`n` seeded synthetic images of `shape` (C, H, W), float32 in [0,1]: blobs plus smooth noise."""
    if n < 1:
        raise ValueError(f"synthetic_queries(n={n}): need at least one image; pass n >= 1.")
    channels, height, width = shape
    parts = [_synthetic_chunk(min(CHUNK, n - start), channels, height, width, generator)
             for start in range(0, n, CHUNK)]
    return torch.cat(parts)
