"""ComfyUI's start/end percentages as gates on σ (sticker-and-character.md §4.4).

ComfyUI maps a percentage p to σ at timestep (1 − p)·999 of the model's discrete schedule and
runs an adapter or ControlNet only while σ(end) ≤ σ ≤ σ(start) for the σ of each model call;
diffusers' ``control_guidance_end`` counts steps instead (end 0.7 at 20 Karras steps: 11 steps in
ComfyUI, 14 in diffusers). The formulas follow ComfyUI's float32 torch arithmetic, so the σ
values match bit for bit (shared/parity/sdxl_conditioning/README.md §3.5).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

# SDXL's (eps) training schedule: linear in sqrt(beta) from 0.00085 to 0.012, 1000 timesteps.
BETA_START = 0.00085
BETA_END = 0.012
NUM_TIMESTEPS = 1000
KARRAS_RHO = 7.0
# ComfyUI's σ for p <= 0: larger than any σ, so the gate is open from the first step.
SIGMA_ALWAYS = 999999999.9


@dataclass(frozen=True)
class SigmaGate:
    """An adapter's or ControlNet's active range as ComfyUI start/end percentages."""

    start: float = 0.0
    end: float = 1.0

    def sigma_range(self) -> tuple[float, float]:
        """(σ_start, σ_end): active while σ_end ≤ σ ≤ σ_start."""
        return percent_to_sigma(self.start), percent_to_sigma(self.end)

    def is_open(self, sigma: float) -> bool:
        high, low = self.sigma_range()
        return low <= float(sigma) <= high


ALWAYS = SigmaGate(0.0, 1.0)


@lru_cache(maxsize=1)
def discrete_sigmas() -> torch.Tensor:
    """float32 (1000,) σ of every training timestep, ascending."""
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, NUM_TIMESTEPS, dtype=torch.float64) ** 2
    alphas_cumprod = torch.from_numpy(np.cumprod((1.0 - betas).numpy(), axis=0))
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()


def percent_to_sigma(percent: float) -> float:
    """σ at timestep (1 − p)·999, log-linearly interpolated between integer timesteps."""
    if percent <= 0.0:
        return SIGMA_ALWAYS
    if percent >= 1.0:
        return 0.0
    log_sigmas = discrete_sigmas().log()
    t = torch.clamp(torch.tensor((1.0 - percent) * 999.0).float(), min=0, max=NUM_TIMESTEPS - 1)
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return float(((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp())


def karras_sigmas(steps: int, denoise: float = 1.0) -> torch.Tensor:
    """float32 (steps + 1,) σ of ComfyUI's ``karras`` schedule, ending in 0.

    With ``denoise`` < 1 ComfyUI builds an int(steps / denoise)-step schedule and runs its last
    ``steps`` steps (§4.3).
    """
    total = steps if denoise > 0.9999 else int(steps / denoise)
    sigmas = discrete_sigmas()
    sigma_min, sigma_max = float(sigmas[0]), float(sigmas[-1])
    ramp = torch.linspace(0, 1, total)
    min_inv_rho = sigma_min ** (1 / KARRAS_RHO)
    max_inv_rho = sigma_max ** (1 / KARRAS_RHO)
    schedule = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** KARRAS_RHO
    return torch.cat([schedule, schedule.new_zeros(1)])[-(steps + 1):]


def active_steps(step_sigmas, gate: SigmaGate) -> np.ndarray:
    """bool per σ: whether ``gate`` is open at that model call."""
    high, low = gate.sigma_range()
    s = np.asarray(step_sigmas, dtype=np.float64)
    return (s >= low) & (s <= high)


def img2img_steps(steps: int, denoise: float) -> tuple[int, float]:
    """ComfyUI (steps, denoise) as diffusers img2img (num_inference_steps, strength) (§4.3)."""
    if denoise > 0.9999:
        return steps, 1.0
    total = int(steps / denoise)
    return total, steps / total
