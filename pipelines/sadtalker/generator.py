"""OcclusionAwareSPADEGenerator: SadTalker's face renderer (spec §3.9).

``encode_source`` depends on the source image only, so a request computes it once and
``render`` broadcasts it over any number of frames (spec §3.9 step 1, §6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dense_motion import DenseMotionNetwork
from .render_blocks import DownBlock2d, ResBlock3d, SameBlock2d, SPADEResnetBlock


class SPADEDecoder(nn.Module):
    """fc conv, 6 SPADE blocks, two (x2 nearest + SPADE block) stages, LeakyReLU(0.2), conv, sigmoid.

    Upstream hard-codes ic = 256, oc = 64, label_nc = 256 and a SPADE hidden width of 128; with the
    official generator these are the generator's feature width (``block_expansion * 2**num_down_blocks``),
    ``block_expansion`` and half the feature width, which is how they are derived here so that
    small test configurations shrink the decoder too.
    """

    def __init__(self, ic: int, oc: int):
        super().__init__()
        label_nc, hidden = ic, ic // 2
        self.fc = nn.Conv2d(ic, 2 * ic, kernel_size=3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, label_nc, hidden))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, label_nc, hidden)
        self.up_1 = SPADEResnetBlock(ic, oc, label_nc, hidden)
        self.conv_img = nn.Conv2d(oc, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2, mode="nearest"), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2, mode="nearest"), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


class OcclusionAwareSPADEGenerator(nn.Module):
    def __init__(self, image_channel: int, feature_channel: int, num_kp: int, block_expansion: int,
                 max_features: int, num_down_blocks: int, reshape_channel: int, reshape_depth: int,
                 num_resblocks: int, estimate_occlusion_map: bool, dense_motion_params: dict,
                 estimate_jacobian: bool = False):
        super().__init__()
        if estimate_jacobian:
            raise ValueError("SadTalker's renderer runs without jacobians (facerender.yaml)")
        self.dense_motion_network = DenseMotionNetwork(num_kp=num_kp, feature_channel=feature_channel,
                                                       estimate_occlusion_map=estimate_occlusion_map,
                                                       **dense_motion_params)
        self.first = SameBlock2d(image_channel, block_expansion, kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(min(max_features, block_expansion * 2 ** i), min(max_features, block_expansion * 2 ** (i + 1)))
            for i in range(num_down_blocks)
        )
        self.second = nn.Conv2d(min(max_features, block_expansion * 2 ** num_down_blocks), max_features, kernel_size=1)
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel, kernel_size=3, padding=1))
        out_features = block_expansion * 2 ** num_down_blocks
        self.third = SameBlock2d(max_features, out_features, kernel_size=3, padding=1, lrelu=True)
        self.fourth = nn.Conv2d(out_features, out_features, kernel_size=1)
        self.decoder = SPADEDecoder(ic=out_features, oc=block_expansion)

    def spectral_norm_keys(self) -> list[str]:
        """State-dict keys of the convolution weights that the checkpoint stores with spectral norm."""
        return [f"{name}.{conv}.weight" for name, module in self.named_modules()
                if isinstance(module, SPADEResnetBlock) for conv in module.spectral_norm_names]

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        """(b, reshape_channel, reshape_depth, S/4, S/4) appearance volume of the source image."""
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        b, _, h, w = out.shape
        return self.resblocks_3d(out.view(b, self.reshape_channel, self.reshape_depth, h, w))

    def render(self, feature_3d: torch.Tensor, kp_source: torch.Tensor,
               kp_driving: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frames for (n, k, 3) driving keypoints; a batch-1 source volume or keypoint set is broadcast to n."""
        n = kp_driving.shape[0]
        feature_3d = feature_3d.expand(n, *feature_3d.shape[1:])
        kp_source = kp_source.expand(n, *kp_source.shape[1:])
        motion = self.dense_motion_network(feature_3d, kp_driving=kp_driving, kp_source=kp_source)
        out = F.grid_sample(feature_3d, motion["deformation"], mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        b, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(b, c * d, h, w)))
        out = out * motion["occlusion_map"]
        return {"prediction": self.decoder(out), "occlusion_map": motion["occlusion_map"],
                "deformation": motion["deformation"]}

    def forward(self, source_image: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.render(self.encode_source(source_image), kp_source, kp_driving)
