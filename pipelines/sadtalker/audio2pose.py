"""PoseVAE (upstream ``Audio2Pose``, spec §3.4): audio + pose style + noise -> head pose per frame."""
from __future__ import annotations

import torch
from torch import nn

from .audio_encoder import wav2lip_audio_encoder
from .batching import CPU_AUDIO_FRAMES
from .cvae import CVAE


class SequenceAudioEncoder(nn.Module):
    """(B, T, 1, 80, 16) -> (B, T, C), the Wav2Lip encoder applied to every frame.

    Upstream stacks frames frame-major and reshapes batch-major, which is only right for B=1
    (spec §3.4); this batch-major version is equal for B=1, the only case a request produces.
    """

    def __init__(self, channels: list[int]):
        super().__init__()
        self.audio_encoder = wav2lip_audio_encoder(channels)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        b, t = mels.shape[:2]
        return self.audio_encoder(mels.flatten(0, 1)).reshape(b, t, -1)


class ConvNormReLU1d(nn.Module):
    """Training-only discriminator layer (Conv1d without bias + BatchNorm1d); never run."""

    def __init__(self, cin: int, cout: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel_size, bias=False)
        self.norm = nn.BatchNorm1d(cout)


class PoseSequenceDiscriminator(nn.Module):
    """Training-only; held so the bundle's ``netD_motion.*`` weights load strictly (spec, Decisions)."""

    def __init__(self, pose_dim: int, channels: list[int]):
        super().__init__()
        c1, c2, c3 = channels
        self.seq = nn.Sequential(
            ConvNormReLU1d(pose_dim, c1, 4),
            ConvNormReLU1d(c1, c2, 4),
            ConvNormReLU1d(c2, c3, 3),
            nn.Conv1d(c3, 1, kernel_size=3),
        )


def window_layout(num_frames: int, seq_len: int) -> tuple[int, int]:
    """(full windows, remainder) over frames 1..N-1; frame 0 is the reference (§3.4)."""
    return (num_frames - 1) // seq_len, (num_frames - 1) % seq_len


def pose_window_count(num_frames: int, seq_len: int) -> int:
    """How many z draws ``PoseVAE.pose_sequence`` consumes for ``num_frames`` frames."""
    full, rest = window_layout(num_frames, seq_len)
    return full + (rest != 0)


class PoseVAE(nn.Module):
    """Audio encoder + CVAE decoder (46 learned pose-style biases on z) + ResUnet; the CVAE
    encoder and the motion discriminator are training-only and never run."""

    def __init__(self, audio_channels: list[int], seq_len: int, latent_size: int, audio_emb_out_size: int,
                 num_classes: int, pose_dim: int, decoder_layer_sizes: list[int],
                 encoder_layer_sizes: list[int], resunet_filters: list[int], discriminator_channels: list[int]):
        super().__init__()
        self.seq_len = seq_len
        self.latent_size = latent_size
        self.num_classes = num_classes
        self.audio_encoder = SequenceAudioEncoder(audio_channels)
        self.netG = CVAE(encoder_layer_sizes, decoder_layer_sizes, latent_size, num_classes, audio_channels[-1],
                         audio_emb_out_size, seq_len, pose_dim, resunet_filters)
        self.netD_motion = PoseSequenceDiscriminator(pose_dim, discriminator_channels)

    def draw_noise(self, num_frames: int, generator: torch.Generator) -> torch.Tensor:
        """One z ~ N(0, I) per window, in window order, from the request's pose stream (spec,
        Decisions): (pose_window_count(N), latent). Draw on a CPU generator, so one seed gives
        the same poses on every device."""
        return torch.randn((pose_window_count(num_frames, self.seq_len), self.latent_size), generator=generator)

    @torch.no_grad()
    def motion_sequence(self, indiv_mels: torch.Tensor, ref_pose: torch.Tensor, pose_style: int,
                        z: torch.Tensor, batch_size: int = CPU_AUDIO_FRAMES) -> torch.Tensor:
        """Head motion relative to ``ref_pose`` for every frame, as upstream ``Audio2Pose.test``.

        indiv_mels (N, 80, 16), ref_pose (6,), z (pose_window_count(N), latent) -> (N, 6).
        Frame 0 is the reference (motion 0). Frames 1..N-1 are cut into full windows of
        ``seq_len`` and, for a remainder, one window over the last ``seq_len`` frames of which
        only the last ``remainder`` outputs are kept; a clip shorter than one window is
        left-padded with its first frame's embedding. The audio encoder takes ``batch_size``
        frames per call (``batching.audio_frames_per_batch``).
        """
        if not 0 <= pose_style < self.num_classes:
            raise ValueError(f"pose_style must be in 0..{self.num_classes - 1}, got {pose_style}")
        n = indiv_mels.shape[0]
        full, rest = window_layout(n, self.seq_len)
        count = full + (rest != 0)
        if z.shape != (count, self.latent_size):
            raise ValueError(f"expected z of shape {(count, self.latent_size)}, got {tuple(z.shape)}")
        zero = ref_pose.new_zeros(1, ref_pose.shape[-1])
        if count == 0:
            return zero
        # Frames are independent in the encoder, so one pass over frames 1..N-1 serves every window.
        mels = indiv_mels[1:].unsqueeze(1)
        emb = torch.cat([self.audio_encoder.audio_encoder(mels[i:i + batch_size]).flatten(1)
                         for i in range(0, n - 1, batch_size)])
        windows = [emb[i * self.seq_len:(i + 1) * self.seq_len] for i in range(full)]
        if rest:
            last = emb[-self.seq_len:]
            pad = self.seq_len - last.shape[0]
            windows.append(torch.cat([last[:1].expand(pad, -1), last]) if pad else last)
        audio = torch.stack(windows)
        motion = self.netG.decoder(ref_pose.reshape(1, -1).expand(count, -1), z.to(audio), audio,
                                   torch.full((count,), pose_style, dtype=torch.long, device=audio.device))
        parts = [zero, motion[:full].flatten(0, 1)]
        if rest:
            parts.append(motion[-1, -rest:])
        return torch.cat(parts)

    def pose_sequence(self, indiv_mels: torch.Tensor, ref_pose: torch.Tensor, pose_style: int,
                      z: torch.Tensor, batch_size: int = CPU_AUDIO_FRAMES) -> torch.Tensor:
        """Absolute pose per frame, ``ref_pose + motion`` (N, 6), before Savitzky-Golay smoothing."""
        return ref_pose.reshape(1, -1) + self.motion_sequence(indiv_mels, ref_pose, pose_style, z, batch_size)
