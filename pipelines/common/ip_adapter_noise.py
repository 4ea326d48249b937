"""The IPAdapter_plus "noise" negative image (sticker-and-character.md §4.2).

With noise n > 0 the plus-face negative is the CLIP embedding of a scrambled copy of the
reference: centre crop, bicubic resize to 224, an elastic warp (α = 75, σ = 3.5·n), a vertical
and a horizontal flip, then Gaussian noise of std 0.25·(1 − n) + 0.05. The node seeds torch's
CPU generator with 0 itself, so the negative is the same for every request. The random draws and
the warp reproduce torchvision's ``ElasticTransform`` / ``RandomVerticalFlip`` /
``RandomHorizontalFlip`` operation for operation (the project does not use torchvision), which is
what shared/parity/sdxl_conditioning ``ipadapter_noise_negative`` checks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CLIP_SIZE = 224
ELASTIC_ALPHA = 75.0
ELASTIC_SIGMA_PER_NOISE = 3.5
NOISE_SEED = 0


def gaussian_kernel_1d(size: int, sigma: float) -> torch.Tensor:
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


def gaussian_blur(field: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(1, 1, H, W) blurred with a size x size Gaussian, reflect padding."""
    k1 = gaussian_kernel_1d(size, sigma)
    kernel = torch.mm(k1[:, None], k1[None, :])[None, None]
    padded = F.pad(field, [size // 2] * 4, mode="reflect")
    return F.conv2d(padded, kernel)


def elastic_displacement(height: int, width: int, alpha: float, sigma: float,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """(1, H, W, 2) displacement in grid_sample units: blurred U(−1, 1) per axis, x first."""
    axes = []
    for extent in (height, width):
        field = torch.rand([1, 1, height, width], generator=generator) * 2 - 1
        if sigma > 0.0:
            size = int(8 * sigma + 1)
            size += 1 - size % 2
            field = gaussian_blur(field, size, sigma)
        axes.append(field * alpha / extent)
    return torch.cat(axes, 1).permute(0, 2, 3, 1)


def elastic_warp(image: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Bilinear warp of (B, C, H, W) by ``displacement``; pixels sampled from outside fade to 0."""
    height, width = image.shape[-2:]
    ys = torch.linspace((-height + 1) / height, (height - 1) / height, height)
    xs = torch.linspace((-width + 1) / width, (width - 1) / width, width)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    grid = (torch.stack([grid_x, grid_y], -1)[None] + displacement).expand(image.shape[0], -1, -1, -1)
    # Sampled together with a plane of ones: the fill (0) is blended in by that coverage.
    with_coverage = torch.cat([image, torch.ones_like(image[:, :1])], 1)
    warped = F.grid_sample(with_coverage, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped[:, :-1] * warped[:, -1:]


def center_square_224(image: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) centre-cropped to a square and resized to 224 (bicubic, antialiased)."""
    height, width = image.shape[-2:]
    side = min(height, width)
    top = int(round((height - side) / 2.0))
    left = int(round((width - side) / 2.0))
    image = image[..., top:top + side, left:left + side]
    if side == CLIP_SIZE:
        return image
    return F.interpolate(image, size=(CLIP_SIZE, CLIP_SIZE), mode="bicubic", align_corners=False, antialias=True)


def noised_negative_image(image: torch.Tensor, noise: float) -> torch.Tensor:
    """(B, 224, 224, 3) float image (BHWC, [0, 1]) -> its scrambled copy, unclamped."""
    generator = torch.Generator().manual_seed(NOISE_SEED)
    x = center_square_224(image.permute(0, 3, 1, 2).float().cpu())
    x = elastic_warp(x, elastic_displacement(CLIP_SIZE, CLIP_SIZE, ELASTIC_ALPHA,
                                             noise * ELASTIC_SIGMA_PER_NOISE, generator))
    # torchvision draws one number per random flip even at p = 1.
    for dim in (-2, -1):
        torch.rand(1, generator=generator)
        x = x.flip(dim)
    x = x.permute(0, 2, 3, 1)
    # ``randn_like`` of this channels-last view: torch fills a non-contiguous tensor element by
    # element (not its vectorised 16-wide path), which decides the values.
    return x + (0.25 * (1 - noise) + 0.05) * torch.empty_like(x).normal_(generator=generator)
