"""PoseVAE's conditional VAE (upstream src/audio2pose_models/cvae.py + res_unet.py, spec §3.4).

Only the decoder runs at inference. The encoder is training-only; it is built (without a
forward) so that the ``netG.encoder.*`` weights in the bundle load strictly (spec, Decisions).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class ResidualConv(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv(stride)-BN-ReLU-conv plus a conv+BN skip."""

    def __init__(self, cin: int, cout: int, stride):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(),
            nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, kernel_size=3, padding=1),
        )
        self.conv_skip = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class TimeUpsample(nn.Module):
    """ConvTranspose2d with kernel and stride (2, 1): doubles the time axis only."""

    def __init__(self, channels: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(channels, channels, kernel_size=(2, 1), stride=(2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class ResUnet(nn.Module):
    """U-Net over a (B, 1, T, 6) pose "image" that halves and restores only the time axis."""

    def __init__(self, filters: list[int]):
        super().__init__()
        f0, f1, f2, f3 = filters
        self.input_layer = nn.Sequential(
            nn.Conv2d(1, f0, kernel_size=3, padding=1),
            nn.BatchNorm2d(f0),
            nn.ReLU(),
            nn.Conv2d(f0, f0, kernel_size=3, padding=1),
        )
        self.input_skip = nn.Sequential(nn.Conv2d(1, f0, kernel_size=3, padding=1))
        self.residual_conv_1 = ResidualConv(f0, f1, stride=(2, 1))
        self.residual_conv_2 = ResidualConv(f1, f2, stride=(2, 1))
        self.bridge = ResidualConv(f2, f3, stride=(2, 1))
        self.upsample_1 = TimeUpsample(f3)
        self.up_residual_conv1 = ResidualConv(f3 + f2, f2, stride=1)
        self.upsample_2 = TimeUpsample(f2)
        self.up_residual_conv2 = ResidualConv(f2 + f1, f1, stride=1)
        self.upsample_3 = TimeUpsample(f1)
        self.up_residual_conv3 = ResidualConv(f1 + f0, f0, stride=1)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)
        x2 = self.residual_conv_1(x1)
        x3 = self.residual_conv_2(x2)
        x4 = self.bridge(x3)
        x6 = self.up_residual_conv1(torch.cat([self.upsample_1(x4), x3], dim=1))
        x8 = self.up_residual_conv2(torch.cat([self.upsample_2(x6), x2], dim=1))
        x10 = self.up_residual_conv3(torch.cat([self.upsample_3(x8), x1], dim=1))
        return self.output_layer(x10)


class PoseDecoder(nn.Module):
    """One window: ``[ref_pose, z + classbias[style], linear_audio(audio).flatten()]`` -> MLP ->
    (T, 6) -> ResUnet -> ``pose_linear`` = head motion relative to the reference pose (§3.4)."""

    def __init__(self, layer_sizes: list[int], latent_size: int, num_classes: int, audio_emb_in_size: int,
                 audio_emb_out_size: int, seq_len: int, pose_dim: int, resunet_filters: list[int]):
        super().__init__()
        self.seq_len = seq_len
        self.resunet = ResUnet(resunet_filters)
        sizes = [pose_dim + latent_size + seq_len * audio_emb_out_size] + list(layer_sizes)
        layers = OrderedDict()
        last = len(sizes) - 2
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers[f"L{i}"] = nn.Linear(n_in, n_out)
            if i < last:
                layers[f"A{i}"] = nn.ReLU()
        # The MLP's output is squashed to (0, 1) before the ResUnet (upstream DECODER).
        layers["sigmoid"] = nn.Sigmoid()
        self.MLP = nn.Sequential(layers)
        self.pose_linear = nn.Linear(pose_dim, pose_dim)
        self.linear_audio = nn.Linear(audio_emb_in_size, audio_emb_out_size)
        self.classbias = nn.Parameter(torch.zeros(num_classes, latent_size))

    def forward(self, ref_pose: torch.Tensor, z: torch.Tensor, audio_emb: torch.Tensor,
                pose_class: torch.Tensor) -> torch.Tensor:
        """ref_pose (B, 6), z (B, latent), audio_emb (B, T, C), pose_class (B,) -> motion (B, T, 6)."""
        b = z.shape[0]
        audio = self.linear_audio(audio_emb).reshape(b, -1)
        x = self.MLP(torch.cat([ref_pose, z + self.classbias[pose_class], audio], dim=-1))
        pose = self.resunet(x.reshape(b, 1, self.seq_len, -1))
        return self.pose_linear(pose.squeeze(1))


class PoseEncoder(nn.Module):
    """Training-only CVAE encoder: held for strict loading of ``netG.encoder.*``; never run."""

    def __init__(self, layer_sizes: list[int], latent_size: int, num_classes: int, audio_emb_in_size: int,
                 audio_emb_out_size: int, seq_len: int, pose_dim: int, resunet_filters: list[int]):
        super().__init__()
        self.resunet = ResUnet(resunet_filters)
        # Upstream widens the first layer by latent + seq_len * audio_out + 6 (the dumped config's 454).
        sizes = [layer_sizes[0] + latent_size + seq_len * audio_emb_out_size + pose_dim] + list(layer_sizes[1:])
        layers = OrderedDict()
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers[f"L{i}"] = nn.Linear(n_in, n_out)
            layers[f"A{i}"] = nn.ReLU()
        self.MLP = nn.Sequential(layers)
        self.linear_means = nn.Linear(sizes[-1], latent_size)
        self.linear_logvar = nn.Linear(sizes[-1], latent_size)
        self.linear_audio = nn.Linear(audio_emb_in_size, audio_emb_out_size)
        self.classbias = nn.Parameter(torch.zeros(num_classes, latent_size))


class CVAE(nn.Module):
    def __init__(self, encoder_layer_sizes: list[int], decoder_layer_sizes: list[int], latent_size: int,
                 num_classes: int, audio_emb_in_size: int, audio_emb_out_size: int, seq_len: int,
                 pose_dim: int, resunet_filters: list[int]):
        super().__init__()
        shared = (latent_size, num_classes, audio_emb_in_size, audio_emb_out_size, seq_len, pose_dim,
                  resunet_filters)
        self.encoder = PoseEncoder(encoder_layer_sizes, *shared)
        self.decoder = PoseDecoder(decoder_layer_sizes, *shared)
