"""face-vid2vid building blocks shared by LivePortrait and SadTalker's face renderer.

Both descend from face-vid2vid: LivePortrait's appearance extractor F, warping module W and SPADE
decoder G (spec expression-editor.md §2.1, §2.3, §2.4) are SadTalker's OcclusionAwareSPADEGenerator
(spec sadtalker.md §3.9) cut into three checkpoints, with the same layers and key names.

Attribute names (``conv``, ``norm``, ``conv1``, ``mlp_shared`` …) are the upstream state-dict names,
so official checkpoints load strictly without renaming. SadTalker's SynchronizedBatchNorm behaves
as plain BatchNorm in eval mode and has the same keys (sadtalker.md §3.9), so plain BatchNorm is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# face-vid2vid's dense-motion hyperparameters, kept unchanged by LivePortrait's models.yaml
# (expression-editor.md §2.3) and SadTalker's facerender.yaml (sadtalker.md §3.9).
FACE_VID2VID_DENSE_MOTION = {
    "block_expansion": 32,
    "max_features": 1024,
    "num_blocks": 5,
    "reshape_depth": 16,
    "compress": 4,
}

# Keypoint heatmaps are Gaussians of variance 0.01 in the normalised grid frame
# (expression-editor.md §2.3 step 5, sadtalker.md §3.9 step 2.4).
KP_VARIANCE = 0.01

# The SPADE res-block convolutions that carry spectral norm in the official checkpoints
# (expression-editor.md §2.4, sadtalker.md §3.9 step 4).
SPECTRAL_NORM_CONVS = ("conv_0", "conv_1", "conv_s")


def make_coordinate_grid(spatial_size: tuple[int, int, int], dtype=torch.float32, device=None) -> torch.Tensor:
    """(d, h, w, 3) grid of (x, y, z) in [-1, 1] with align-corners spacing 2/(n-1).

    Computed as ``2 * (i / (n - 1)) - 1`` like upstream so the coordinates round the same way. The
    grid is "align-corners" while every grid_sample uses align_corners=False; upstream does exactly
    this and a faithful port keeps the mismatch (expression-editor.md §2.3 step 2).
    """
    d, h, w = spatial_size
    x = 2 * (torch.arange(w, dtype=dtype, device=device) / (w - 1)) - 1
    y = 2 * (torch.arange(h, dtype=dtype, device=device) / (h - 1)) - 1
    z = 2 * (torch.arange(d, dtype=dtype, device=device) / (d - 1)) - 1
    return torch.stack([
        x.view(1, 1, w).expand(d, h, w),
        y.view(1, h, 1).expand(d, h, w),
        z.view(d, 1, 1).expand(d, h, w),
    ], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, K, 3) keypoints on a (d, h, w, 3) grid → (B, K, d, h, w) exp(-|g - kp|² / (2·KP_VARIANCE))."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / KP_VARIANCE)


def sparse_motions(grid: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
    """(B, 1+K, d, h, w, 3): the identity grid (background), then per keypoint G − x_d[k] + x_s[k].

    A pure translation per keypoint, no Jacobian (expression-editor.md §2.3 step 3).
    """
    bs = kp_driving.shape[0]
    moved = grid[None, None] - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
    background = grid[None, None].expand(bs, 1, *grid.shape)
    return torch.cat([background, moved], dim=1)


class SameBlock2d(nn.Module):
    """Conv2d k3 → BatchNorm2d → ReLU (or LeakyReLU 0.01), resolution kept."""

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        # The `third` block uses torch's default LeakyReLU slope 0.01 (expression-editor.md §2.3,
        # sadtalker.md §3.9 step 3).
        return F.leaky_relu(out, 0.01) if self.lrelu else F.relu(out)


class DownBlock2d(nn.Module):
    """Conv2d k3 → BatchNorm2d → ReLU → AvgPool 2×2."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class ResBlock3d(nn.Module):
    """Pre-activation residual block: BN3d → ReLU → Conv3d → BN3d → ReLU → Conv3d, + identity."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(features, affine=True)
        self.norm2 = nn.BatchNorm3d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class DownBlock3d(nn.Module):
    """Conv3d k3 → BatchNorm3d → ReLU → AvgPool (1,2,2): H and W halve, depth is kept."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(x)))
        # Upstream's avg_pool3d (1,2,2) as avg_pool2d over C·D slices: bit-identical in float32 on
        # CPU, and unlike avg_pool3d it has float16/bfloat16 CPU kernels.
        b, c, d, h, w = out.shape
        return F.avg_pool2d(out.reshape(b, c * d, h, w), kernel_size=2).view(b, c, d, h // 2, w // 2)


class UpBlock3d(nn.Module):
    """Nearest upsampling ×(1,2,2) → Conv3d k3 → BatchNorm3d → ReLU."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return F.relu(self.norm(self.conv(out)))


def hourglass_channels(block_expansion: int, max_features: int, level: int) -> int:
    """Channels after encoder level ``level`` (0 = the input side): ``block_expansion·2^level``, capped."""
    return min(max_features, block_expansion * (2 ** level))


class HourglassEncoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(in_features if i == 0 else hourglass_channels(block_expansion, max_features, i),
                        hourglass_channels(block_expansion, max_features, i + 1))
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """Up blocks with U-Net concatenation; the last skip is the hourglass input itself, so the
    output has ``block_expansion + in_features`` channels, refined by one Conv3d → BN → ReLU."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        up_blocks = []
        for i in reversed(range(num_blocks)):
            # The deepest block sees only the bottleneck; the others see [upsampled, skip].
            width = hourglass_channels(block_expansion, max_features, i + 1)
            in_filters = width if i == num_blocks - 1 else 2 * width
            up_blocks.append(UpBlock3d(in_filters, hourglass_channels(block_expansion, max_features, i)))
        self.up_blocks = nn.ModuleList(up_blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3-D U-Net whose output has ``block_expansion + in_features`` channels (expression-editor.md §2.3 step 7)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class AppearanceEncoder(nn.Module):
    """Source image → 3-D appearance feature volume (expression-editor.md §2.1, sadtalker.md §3.9 step 1).

    SameBlock2d, DownBlock2d ×num_down_blocks, a 1×1 conv to ``max_features`` channels re-read as
    (reshape_channel, reshape_depth), then 3-D residual blocks. The layers are attributes of the
    network itself because both checkpoints keep their keys (``first``, ``down_blocks``,
    ``second``, ``resblocks_3d``) at the top level.
    """

    def __init__(self, image_channel: int, block_expansion: int, num_down_blocks: int,
                 max_features: int, reshape_channel: int, reshape_depth: int, num_resblocks: int):
        super().__init__()
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.first = SameBlock2d(image_channel, block_expansion)
        widths = [min(max_features, block_expansion * (2 ** i)) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1]) for i in range(num_down_blocks)
        )
        self.second = nn.Conv2d(widths[-1], max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            # Upstream's child names ("3dr0", …) are the checkpoint keys.
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel))

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        """(B, reshape_channel, reshape_depth, S/2^num_down_blocks, S/2^num_down_blocks) volume."""
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        bs, _, h, w = out.shape
        # The 2-D channels are read as (C, D): 512 = 32 channels × 16 depth slices officially.
        return self.resblocks_3d(out.view(bs, self.reshape_channel, self.reshape_depth, h, w))


class DenseMotionNetwork(nn.Module):
    """Keypoints → a dense sampling grid and an occlusion map (expression-editor.md §2.3, sadtalker.md §3.9 step 2).

    ``mask_floor``: SadTalker zeroes softmax mask weights below it and does not renormalise
    (sadtalker.md §3.9 step 2.7); LivePortrait uses the softmax as is (None). The floor changes the
    deformation, so the two cannot share one setting.
    """

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int,
                 feature_channel: int, reshape_depth: int, compress: int, estimate_occlusion_map: bool,
                 mask_floor: float | None = None):
        super().__init__()
        self.num_kp = num_kp
        self.mask_floor = mask_floor
        # Per motion (background + each keypoint): one heatmap channel and the compressed feature.
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map else None
        )

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        feature = F.relu(self.norm(self.compress(feature)))
        bs, c, d, h, w = feature.shape
        k1 = self.num_kp + 1
        grid = make_coordinate_grid((d, h, w), kp_source.dtype, kp_source.device)
        motions = sparse_motions(grid, kp_driving, kp_source)

        # Sample the compressed volume once per motion: (B·(1+K), c, d, h, w); 5-D grid_sample is
        # trilinear with zero padding and align_corners=False, upstream's defaults.
        repeated = feature.unsqueeze(1).expand(bs, k1, c, d, h, w).reshape(bs * k1, c, d, h, w)
        deformed = F.grid_sample(repeated, motions.reshape(bs * k1, d, h, w, 3), align_corners=False)
        deformed = deformed.view(bs, k1, c, d, h, w)

        heatmap = keypoint_gaussians(kp_driving, grid) - keypoint_gaussians(kp_source, grid)
        heatmap = torch.cat([heatmap.new_zeros(bs, 1, d, h, w), heatmap], dim=1)

        # Per motion: [heatmap, deformed features] = 1 + c channels (expression-editor.md §2.3 step 6).
        x = torch.cat([heatmap.unsqueeze(2), deformed], dim=2).view(bs, -1, d, h, w)
        prediction = self.hourglass(x)

        mask = F.softmax(self.mask(prediction), dim=1).unsqueeze(2)
        if self.mask_floor is not None:
            mask = torch.where(mask < self.mask_floor, torch.zeros_like(mask), mask)
        deformation = (motions.permute(0, 1, 5, 2, 3, 4) * mask).sum(dim=1).permute(0, 2, 3, 4, 1)
        out = {"deformation": deformation}
        if self.occlusion is not None:
            # (C, D) flattened into 2-D channels, C-major (expression-editor.md §2.3 step 10).
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.view(bs, -1, h, w)))
        return out


class SPADE(nn.Module):
    """InstanceNorm(x)·(1 + γ(seg)) + β(seg), seg resized to x by nearest."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """SPADE residual block; a learned 1×1 shortcut (no bias) when the channel count changes.

    Spectral norm lives only in the checkpoint: the loaders fold ``weight_orig / σ`` into these
    plain convolutions (expression-editor.md §2.4, sadtalker.md §3.9 step 4).
    """

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int):
        super().__init__()
        fmid = min(fin, fout)
        self.conv_0 = nn.Conv2d(fin, fmid, kernel_size=3, padding=1)
        self.conv_1 = nn.Conv2d(fmid, fout, kernel_size=3, padding=1)
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmid, label_nc, hidden)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, kernel_size=1, bias=False)
            self.norm_s = SPADE(fin, label_nc, hidden)

    @property
    def spectral_norm_names(self) -> list[str]:
        """The convolutions of this block stored with spectral norm."""
        return [name for name in SPECTRAL_NORM_CONVS if hasattr(self, name)]

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx


class SPADEDecoder(nn.Module):
    """Feature (B, C, H, W) → RGB (B, 3, 4·upscale·H, 4·upscale·W) in (0, 1).

    fc conv to 2C, 6 SPADE blocks, two (×2 nearest + SPADE block) stages, LeakyReLU(0.2), conv_img,
    sigmoid. The decoder input is also the SPADE conditioning map of every block
    (expression-editor.md §2.4, sadtalker.md §3.9 step 4). ``upscale`` > 1 makes conv_img a
    conv + PixelShuffle (LivePortrait's 512² output, keys ``conv_img.0.*``); SadTalker uses 1.
    """

    def __init__(self, feature_channels: int, out_channels: int, hidden: int, upscale: int = 1):
        super().__init__()
        cin = feature_channels
        self.fc = nn.Conv2d(cin, 2 * cin, kernel_size=3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResnetBlock(2 * cin, 2 * cin, cin, hidden))
        self.up_0 = SPADEResnetBlock(2 * cin, cin, cin, hidden)
        self.up_1 = SPADEResnetBlock(cin, out_channels, cin, hidden)
        if upscale > 1:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * upscale * upscale, kernel_size=3, padding=1),
                nn.PixelShuffle(upscale),
            )
        else:
            self.conv_img = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        seg = feature
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))
