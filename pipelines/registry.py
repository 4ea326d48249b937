"""Endpoint slug -> pipeline class, imported lazily so that the server never imports torch.

``BUILT`` says which endpoints this version of facefoundry serves: an endpoint marked False answers
501 before anything else, is listed as not built by ``/ready`` and is skipped by
``download_weights.py`` (issue 9, "Honest answers"). A pipeline that lands flips its own line.
"""
from __future__ import annotations

import importlib

PIPELINES: dict[str, str] = {
    "expression-editor": "pipelines.expression_editor.pipeline:ExpressionEditorPipeline",
    "faceswap-v4": "pipelines.faceswap.pipeline:FaceSwapPipeline",
    "sadtalker": "pipelines.sadtalker.pipeline:SadTalkerPipeline",
    "face-to-sticker": "pipelines.sticker.pipeline:FaceToStickerPipeline",
    "consistent-character": "pipelines.character.pipeline:ConsistentCharacterPipeline",
}

BUILT: dict[str, bool] = {
    "expression-editor": True,
    "faceswap-v4": True,
    "sadtalker": True,
    "face-to-sticker": True,
    "consistent-character": True,
}


def is_built(slug: str) -> bool:
    return BUILT.get(slug, False)


def built_slugs() -> list[str]:
    return [slug for slug in PIPELINES if is_built(slug)]


def pipeline_class(slug: str):
    """Import and return the pipeline class behind ``slug`` (KeyError for an unknown slug)."""
    module_name, _, attr = PIPELINES[slug].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def params_class(slug: str) -> type:
    """The ``Params`` dataclass of ``slug``'s package (``<package>/params.py``, torch-free)."""
    package = PIPELINES[slug].partition(":")[0].rpartition(".")[0]
    return importlib.import_module(f"{package}.params").Params
