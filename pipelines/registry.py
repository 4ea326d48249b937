"""Endpoint slug -> pipeline class, imported lazily so that the server never imports torch."""
from __future__ import annotations

import importlib

PIPELINES: dict[str, str] = {
    "expression-editor": "pipelines.expression_editor.pipeline:ExpressionEditorPipeline",
    "faceswap-v4": "pipelines.faceswap.pipeline:FaceSwapPipeline",
    "sadtalker": "pipelines.sadtalker.pipeline:SadTalkerPipeline",
    "face-to-sticker": "pipelines.sticker.pipeline:FaceToStickerPipeline",
    "consistent-character": "pipelines.character.pipeline:ConsistentCharacterPipeline",
}


def pipeline_class(slug: str):
    """Import and return the pipeline class behind ``slug`` (KeyError for an unknown slug)."""
    module_name, _, attr = PIPELINES[slug].partition(":")
    return getattr(importlib.import_module(module_name), attr)
