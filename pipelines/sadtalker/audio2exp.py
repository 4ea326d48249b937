"""ExpNet (upstream ``SimpleWrapperV2``, spec §3.3): audio window + source expression + blink -> expression."""
from __future__ import annotations

import torch
from torch import nn

from .audio_encoder import wav2lip_audio_encoder
from .batching import CPU_AUDIO_FRAMES


class ExpNet(nn.Module):
    """Per frame: ``mapping1([enc(mel), source_exp, blink_ratio])`` is the absolute expression.

    Frames are independent (BN in eval mode, no temporal context beyond the 16-mel window), so
    upstream's 10-frame chunks are only a batch size (§3.3).
    """

    def __init__(self, audio_channels: list[int], exp_dim: int):
        super().__init__()
        self.audio_encoder = wav2lip_audio_encoder(audio_channels)
        self.mapping1 = nn.Linear(audio_channels[-1] + exp_dim + 1, exp_dim)

    def forward(self, mels: torch.Tensor, source_exp: torch.Tensor, blink: torch.Tensor) -> torch.Tensor:
        """mels (M, 1, 80, 16), source_exp (M, exp_dim), blink (M, 1) -> (M, exp_dim)."""
        audio = self.audio_encoder(mels).flatten(1)
        return self.mapping1(torch.cat([audio, source_exp, blink], dim=1))

    @torch.no_grad()
    def expression_sequence(self, indiv_mels: torch.Tensor, source_exp: torch.Tensor, blink: torch.Tensor,
                            batch_size: int = CPU_AUDIO_FRAMES) -> torch.Tensor:
        """indiv_mels (N, 80, 16), source_exp (exp_dim,), blink (N,) -> expression (N, exp_dim),
        ``batch_size`` frames per call (``batching.audio_frames_per_batch``)."""
        n = indiv_mels.shape[0]
        out = []
        for i in range(0, n, batch_size):
            mels = indiv_mels[i:i + batch_size].unsqueeze(1)
            m = mels.shape[0]
            out.append(self(mels, source_exp.reshape(1, -1).expand(m, -1), blink[i:i + batch_size].reshape(m, 1)))
        return torch.cat(out, dim=0)
