"""Licence policy: non-commercial components refuse to load unless allowed."""
from __future__ import annotations

import pytest

from pipelines.base import LicenceRefused
from pipelines.weights.manifest import load_manifest
from pipelines.weights.policy import check_licences, component_report

MANIFEST = load_manifest()


def test_refuses_non_commercial_naming_component_and_licence():
    entries = MANIFEST.for_pipeline("faceswap-v4")
    with pytest.raises(LicenceRefused) as err:
        check_licences(entries, allow_noncommercial=False)
    assert "inswapper_128 (InsightFace: non-commercial research only)" in str(err.value)
    assert "allow_noncommercial" in str(err.value)


def test_allows_when_the_deployment_says_so():
    notices = check_licences(MANIFEST.for_pipeline("faceswap-v4"), allow_noncommercial=True)
    assert any(n.startswith("gfpgan_v1.4: commercial use unknown") for n in notices)


def test_commercial_pipeline_loads_without_the_setting():
    assert check_licences(MANIFEST.for_pipeline("expression-editor"), allow_noncommercial=False) == []


def test_component_report_for_ready():
    report = component_report([MANIFEST["inswapper_128"], MANIFEST["liveportrait.motion_extractor"]])
    assert report == [
        {"id": "inswapper_128", "file": "insightface/inswapper_128.onnx",
         "licence": "InsightFace: non-commercial research only", "commercial_use": False},
        {"id": "liveportrait.motion_extractor", "file": "liveportrait/base_models/motion_extractor.pth",
         "licence": "MIT", "commercial_use": True},
    ]
