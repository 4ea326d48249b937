"""How many frames (or faces) one call of SadTalker's networks takes (issue 16, spec §6).

Every per-frame network here treats frames independently (BatchNorm in eval mode: §3.3 for the
audio encoders, §5.6 step 6 for the renderer, §5.10 for the enhancer), so a batch size trades
memory for speed and never changes a result beyond float rounding.

* Audio encoders on CPU: 32 frames a call, PoseVAE's window (§3.4). A whole 250-frame clip in
  one call does the same arithmetic, but its activations (32 x 80 x 16 floats a frame in the first
  blocks) no longer stay in the CPU caches: it ran about twice as long as the reference's 10-frame
  chunks (``Audio2Exp.test``, §3.3; issue 16). Measured on one thread (process CPU time, which
  other processes' load does not inflate), 24 to 48 frames a call took 5-15 % less than 10, and
  fewer calls also mean fewer thread barriers when the cores are shared. On CUDA one call takes
  up to ``CUDA_AUDIO_FRAMES``.
* Renderer and enhancer on CUDA: as many as fit in the free GPU memory, from the bytes one frame
  (one face) needed when the pipeline was loaded; on CPU a fixed small batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np
import torch

from .animate import make_animation
from .config import SEMANTIC_RADIUS

if TYPE_CHECKING:  # the networks' modules import this one for the audio batch sizes
    from ..common.face_restore import FaceEnhancer
    from .mapping_net import MappingNet
    from .render_loader import RenderNetworks

CPU_AUDIO_FRAMES = 32
CUDA_AUDIO_FRAMES = 1024
CPU_RENDER_FRAMES = 8
CPU_ENHANCE_FACES = 8
# Upper bounds on CUDA: beyond these a larger batch no longer shortens a 10 s clip (250 frames)
# noticeably, and the frames of one batch are held on the host before the encoder takes them.
MAX_RENDER_FRAMES = 64
MAX_ENHANCE_FACES = 32
# Part of the free memory a batch may take: the measured peak per frame leaves out allocator
# fragmentation and cuDNN workspaces that grow with the batch.
MEMORY_HEADROOM = 0.7
# The enhancer's aligned face crops are FFHQ 512 x 512 (§5.10 step 3.2).
FACE_SIZE = 512


def audio_frames_per_batch(device: str) -> int:
    return CUDA_AUDIO_FRAMES if str(device).startswith("cuda") else CPU_AUDIO_FRAMES


def free_device_bytes(device: str) -> int:
    """Bytes a new allocation on ``device`` can take: the driver's free memory plus what torch's
    caching allocator holds but does not use."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


@dataclass(frozen=True)
class MemoryCost:
    """Peak CUDA bytes of one call over ``n`` items: ``fixed + per_item * n``."""

    fixed: int
    per_item: int


def batch_that_fits(free_bytes: int, cost: MemoryCost, cap: int, headroom: float = MEMORY_HEADROOM) -> int:
    """The largest batch, at least 1 and at most ``cap``, whose cost fits in ``headroom`` of ``free_bytes``."""
    return max(1, min(cap, (int(free_bytes * headroom) - cost.fixed) // max(cost.per_item, 1)))


def peak_bytes(run: Callable[[], object], device: str) -> int:
    """Peak CUDA memory ``run()`` allocates beyond what was allocated before it.

    Resets the device's peak-memory statistics: call it while loading, not during a request.
    """
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return max(0, torch.cuda.max_memory_allocated(device) - before)


def measure_memory_cost(run: Callable[[int], object], device: str) -> MemoryCost:
    """``run(n)`` for one and for two items; the difference is the cost of an item."""
    one, two = peak_bytes(lambda: run(1), device), peak_bytes(lambda: run(2), device)
    per_item = max(two - one, 1)
    return MemoryCost(fixed=max(one - per_item, 0), per_item=per_item)


@torch.inference_mode()
def renderer_memory(render: RenderNetworks, mapping: MappingNet, image_size: int, device: str) -> MemoryCost:
    """The face renderer's cost per frame at ``image_size`` (source encoding in ``fixed``)."""
    weight = next(render.generator.parameters())
    source = torch.zeros(1, 3, image_size, image_size, device=device, dtype=weight.dtype)
    window = torch.zeros(1, mapping.first[0].in_channels, 2 * SEMANTIC_RADIUS + 1, device=device, dtype=weight.dtype)
    return measure_memory_cost(
        lambda n: next(make_animation(source, window, window.expand(n, -1, -1), render.kp_detector, mapping,
                                      render.generator, n)), device)


@torch.inference_mode()
def enhancer_memory(enhancer: FaceEnhancer, device: str) -> MemoryCost:
    """GFPGAN and the ParseNet mask's cost per aligned 512 x 512 face."""
    return measure_memory_cost(
        lambda n: enhancer.masks(enhancer.restore_aligned(np.zeros((n, FACE_SIZE, FACE_SIZE, 3), np.uint8), None)),
        device)


@dataclass(frozen=True)
class BatchSizes:
    """Frames (faces) per call for one loaded pipeline; an explicit size overrides the rule."""

    device: str
    render_cost: Mapping[int, MemoryCost]  # image size -> cost; measured on CUDA only
    enhance_cost: MemoryCost | None
    render_frames: int | None = None
    enhance_faces: int | None = None

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def audio(self) -> int:
        return audio_frames_per_batch(self.device)

    def render(self, image_size: int) -> int:
        if self.render_frames is not None:
            return self.render_frames
        if not self.on_cuda:
            return CPU_RENDER_FRAMES
        return batch_that_fits(free_device_bytes(self.device), self.render_cost[image_size], MAX_RENDER_FRAMES)

    def enhance(self) -> int:
        if self.enhance_faces is not None:
            return self.enhance_faces
        if not self.on_cuda:
            return CPU_ENHANCE_FACES
        return batch_that_fits(free_device_bytes(self.device), self.enhance_cost, MAX_ENHANCE_FACES)


def measure_batch_sizes(renderers: Mapping[int, RenderNetworks], mapping: MappingNet, enhancer: FaceEnhancer,
                        device: str, render_frames: int | None = None,
                        enhance_faces: int | None = None) -> BatchSizes:
    """On CUDA, one- and two-item runs of the renderer at each size and of the enhancer (this
    also compiles a compiled renderer); on CPU nothing runs."""
    if not str(device).startswith("cuda"):
        return BatchSizes(str(device), {}, None, render_frames, enhance_faces)
    render_cost = {size: renderer_memory(render, mapping, size, device) for size, render in renderers.items()}
    return BatchSizes(str(device), render_cost, enhancer_memory(enhancer, device), render_frames, enhance_faces)
