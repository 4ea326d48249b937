"""ArcFace embeddings from ``w600k_r50.onnx`` (buffalo_l) or ``glintr100.onnx`` (antelopev2).

Reproduces insightface's ``ArcFaceONNX.get`` (specs/faceswap.md §3.2, §3.4, §9.3). Only w600k_r50
embeddings are valid inswapper sources (§1.4).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx

from .alignment import norm_crop
from .face_types import Face
from .onnx_session import onnx_session

CROP_SIZE = 112


def normalises_internally(model: onnx.ModelProto) -> bool:
    """True when the graph subtracts and scales its input itself (MXNet exports): a ``Sub``/
    ``_minus`` node and a ``Mul``/``_mul`` node among the first 8 nodes (§3.2)."""
    names = [node.name for node in model.graph.node[:8]]
    has_sub = any(n.startswith("Sub") or n.startswith("_minus") for n in names)
    has_mul = any(n.startswith("Mul") or n.startswith("_mul") for n in names)
    return has_sub and has_mul


def recognition_blob(crops_bgr: list[np.ndarray], mean: float, std: float) -> np.ndarray:
    """(x - mean) / std, RGB, Nx3x112x112 float32, as ``cv2.dnn.blobFromImages`` computes it (§3.4)."""
    size = crops_bgr[0].shape[1], crops_bgr[0].shape[0]
    return cv2.dnn.blobFromImages(crops_bgr, 1.0 / std, size, (mean,) * 3, swapRB=True)


class ArcFace:
    """The recogniser of one ONNX file: aligned 112 crop -> raw 512-d embedding."""

    def __init__(self, model_file: Path | str, device: str | None = None):
        self.model_file = Path(model_file)
        if normalises_internally(onnx.load(str(model_file))):
            self.input_mean, self.input_std = 0.0, 1.0
        else:
            self.input_mean, self.input_std = 127.5, 127.5
        self.session = onnx_session(model_file, device)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def embed_crops(self, crops_bgr: list[np.ndarray]) -> np.ndarray:
        """(N, 512) raw embeddings of aligned 112x112 BGR crops."""
        blob = recognition_blob(crops_bgr, self.input_mean, self.input_std)
        return self.session.run([self.output_name], {self.input_name: blob})[0]

    def embed(self, img_bgr: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """The raw (512,) embedding of the face with keypoints ``kps`` (``Face.embedding``)."""
        crop, _ = norm_crop(img_bgr, kps, CROP_SIZE)
        return self.embed_crops([crop])[0].ravel()

    def get(self, img_bgr: np.ndarray, face: Face) -> np.ndarray:
        """Embed ``face`` and store the result on it, as insightface's ``ArcFaceONNX.get``."""
        face.embedding = self.embed(img_bgr, face.kps)
        return face.embedding
