"""OcclusionAwareSPADEGenerator: SadTalker's face renderer (spec §3.9).

``encode_source`` depends on the source image only, so a request computes it once and
``render`` broadcasts it over any number of frames (spec §3.9 step 1, §6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common.motion_blocks import AppearanceEncoder, DenseMotionNetwork, SameBlock2d, SPADEDecoder, SPADEResnetBlock

# Mask weights below this are zeroed and the rest is NOT renormalised (spec §3.9 step 2.7, §10.4).
MASK_FLOOR = 1e-3


class OcclusionAwareSPADEGenerator(AppearanceEncoder):
    """Appearance encoder (``first`` … ``resblocks_3d``, inherited because the checkpoint keeps
    those keys at the generator's top level), dense motion, ``third``/``fourth``, SPADE decoder."""

    def __init__(self, image_channel: int, feature_channel: int, num_kp: int, block_expansion: int,
                 max_features: int, num_down_blocks: int, reshape_channel: int, reshape_depth: int,
                 num_resblocks: int, estimate_occlusion_map: bool, dense_motion_params: dict,
                 estimate_jacobian: bool = False):
        if estimate_jacobian:
            raise ValueError("SadTalker's renderer runs without jacobians (facerender.yaml)")
        if not estimate_occlusion_map:
            raise ValueError("SadTalker's renderer always estimates the occlusion map (facerender.yaml)")
        super().__init__(image_channel, block_expansion, num_down_blocks, max_features, reshape_channel,
                         reshape_depth, num_resblocks)
        self.dense_motion_network = DenseMotionNetwork(num_kp=num_kp, feature_channel=feature_channel,
                                                       estimate_occlusion_map=True, mask_floor=MASK_FLOOR,
                                                       **dense_motion_params)
        out_features = block_expansion * 2 ** num_down_blocks
        self.third = SameBlock2d(max_features, out_features, lrelu=True)
        self.fourth = nn.Conv2d(out_features, out_features, kernel_size=1)
        # Upstream hard-codes the decoder's ic = 256, oc = 64 and a SPADE hidden width of 128; with
        # the official generator these are out_features, block_expansion and out_features / 2, which
        # is how they are derived here so that small test configurations shrink the decoder too.
        self.decoder = SPADEDecoder(out_features, block_expansion, hidden=out_features // 2)

    def spectral_norm_keys(self) -> list[str]:
        """State-dict keys of the convolution weights that the checkpoint stores with spectral norm."""
        return [f"{name}.{conv}.weight" for name, module in self.named_modules()
                if isinstance(module, SPADEResnetBlock) for conv in module.spectral_norm_names]

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
