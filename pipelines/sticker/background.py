"""Background removal behind one interface (sticker-and-character.md §2.2 step 8, §2.3).

``ISNetRemover`` reproduces the BRIA_RMBG ComfyUI node: bilinear resize to 1024², mean 0.5 /
std 1.0, IS-Net, bilinear back to the image size, min-max normalisation of the mask, then the RGB
pasted through that mask onto a transparent canvas (PIL ``paste``: colour and alpha both scaled
by the mask). Two weight files run through it, chosen by the deployment (LoadOptions
``background_remover``):

* ``rmbg-1.4``: BRIA RMBG-1.4 (``model.pth``, the workflow's remover), non-commercial;
* ``isnet-general-use``: the DIS authors' general-use IS-Net (Apache-2.0), the licence-clean
  substitute §8 asks for. Same network and the same pre-processing (DIS's own inference uses
  1024², mean 0.5, std 1.0); its published file is an ONNX export, run by ONNX Runtime.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.common.checkpoint import config_for, load_strict, read_state_file
from pipelines.common.onnx_session import onnx_session

from .isnet import OFFICIAL_CONFIG, ISNet

RMBG_SIZE = 1024
RMBG_MEAN = 0.5
RMBG_STD = 1.0


class BackgroundRemover(Protocol):
    def remove(self, image: np.ndarray) -> np.ndarray:
        """uint8 HWC RGB → uint8 HWC RGBA with the background transparent."""


def load_isnet(path: Path, device: str = "cpu") -> ISNet:
    net = ISNet(**config_for(path, OFFICIAL_CONFIG))
    return load_strict(net, read_state_file(path), str(path)).to(device).eval()


class ISNetONNX:
    """An IS-Net ONNX export: first input the normalised image, first output the full-size mask."""

    def __init__(self, path: Path, device: str = "cpu"):
        self.session = onnx_session(path, device)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.cpu().numpy()})[0])


def load_mask_network(path: Path, device: str = "cpu"):
    """The IS-Net of a ``.pth`` state dict (RMBG-1.4) or an ``.onnx`` export (IS-Net general-use)."""
    return ISNetONNX(path, device) if Path(path).suffix == ".onnx" else load_isnet(path, device)


def rmbg_input(image: np.ndarray, size: int = RMBG_SIZE) -> torch.Tensor:
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    x = torch.from_numpy(resized.copy()).float().permute(2, 0, 1)[None] / 255.0
    return (x - RMBG_MEAN) / RMBG_STD


def min_max(mask: torch.Tensor) -> torch.Tensor:
    low, high = mask.min(), mask.max()
    return (mask - low) / (high - low).clamp_min(torch.finfo(mask.dtype).tiny)


def paste_through_mask(image: np.ndarray, mask_u8: np.ndarray) -> np.ndarray:
    """RGBA of ``image`` pasted with ``mask_u8`` onto a transparent canvas."""
    canvas = Image.new("RGBA", (image.shape[1], image.shape[0]), (0, 0, 0, 0))
    canvas.paste(Image.fromarray(image), mask=Image.fromarray(mask_u8))
    return np.asarray(canvas)


class ISNetRemover:
    def __init__(self, net):
        self.net = net

    @torch.no_grad()
    def mask(self, image: np.ndarray) -> np.ndarray:
        """uint8 HxW foreground mask."""
        device = next(self.net.parameters()).device if isinstance(self.net, ISNet) else "cpu"
        probability = self.net(rmbg_input(image).to(device)).float().cpu()
        full = F.interpolate(probability, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
        return (min_max(full) * 255).numpy().astype(np.uint8)

    def remove(self, image: np.ndarray) -> np.ndarray:
        return paste_through_mask(image, self.mask(image))
