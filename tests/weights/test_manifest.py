"""weights/manifest.toml is well-formed and covers every file the loaders ask for."""
from __future__ import annotations

import pytest

from pipelines.base import LoadOptions, WeightsMissing
from pipelines.registry import PIPELINES, pipeline_class
from pipelines.weights.manifest import ManifestError, load_manifest, require, resolve

MANIFEST = load_manifest()


def test_every_entry_is_complete():
    for e in MANIFEST.entries.values():
        assert e.source and e.licence and e.dest and e.format, e.id
        assert e.commercial_use in (True, False, "unknown"), e.id
        assert ("hf" in e.source and e.source["hf"].get("revision")) or e.source.get("url", "").startswith("https://"), e.id
    assert len({e.dest for e in MANIFEST.entries.values()}) == len(MANIFEST.entries)


def test_every_pipeline_has_required_files():
    for slug in PIPELINES:
        assert any(e.required for e in MANIFEST.for_pipeline(slug)), slug


@pytest.mark.parametrize(
    "entry_id, dest",
    [
        ("liveportrait.appearance_feature_extractor", "liveportrait/base_models/appearance_feature_extractor.pth"),
        ("liveportrait.stitching_retargeting_module", "liveportrait/retargeting_models/stitching_retargeting_module.pth"),
        ("insightface.buffalo_l.det_10g", "insightface/models/buffalo_l/det_10g.onnx"),
        ("inswapper_128", "insightface/inswapper_128.onnx"),
        ("gfpgan_v1.4", "gfpgan/GFPGANv1.4.pth"),
        ("facexlib.parsenet", "facexlib/parsing_parsenet.pth"),
        ("sadtalker.bundle_256", "sadtalker/SadTalker_V0.0.2_256.safetensors"),
    ],
)
def test_layout_mirrors_upstream(entry_id, dest):
    assert MANIFEST[entry_id].dest == dest


def test_non_commercial_flags_follow_the_specs():
    for entry_id in ("inswapper_128", "insightface.buffalo_l.w600k_r50", "insightface.antelopev2.glintr100",
                     "instantid.ip_adapter", "rmbg_1.4"):
        assert MANIFEST[entry_id].commercial_use is False, entry_id
    for entry_id in ("gfpgan_v1.4", "sadtalker.bundle_256", "sadtalker.mapping_00109"):
        assert MANIFEST[entry_id].commercial_use == "unknown", entry_id
    assert MANIFEST["liveportrait.spade_generator"].commercial_use is True


@pytest.mark.parametrize("slug", list(PIPELINES))
def test_files_a_pipeline_loads_are_in_the_manifest(slug, tmp_path):
    """Load each pipeline from an empty folder: the WeightsMissing it raises names every id it asks for.

    An id the manifest lacks makes ``require`` raise KeyError instead, failing this test.
    """
    try:
        cls = pipeline_class(slug)
    except ModuleNotFoundError as err:
        if not PIPELINES[slug].startswith(str(err.name)):
            raise
        pytest.skip(f"{slug} is not built yet")
    with pytest.raises(WeightsMissing) as err:
        cls.load(LoadOptions(weights_dir=tmp_path, allow_noncommercial=True))
    asked = [item.split(" (")[0] for item in err.value.missing]
    assert asked
    for entry_id in asked:
        assert slug in MANIFEST[entry_id].pipelines, f"{entry_id} does not list {slug}"


def write(tmp_path, text):
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


BASE = """
[[file]]
id = "{id}"
pipelines = ["sadtalker"]
source = {{ url = "https://example.org/a.pth" }}
format = "pth"
licence = "MIT"
commercial_use = {cu}
dest = "{dest}"
"""


def test_malformed_manifests_are_refused_with_every_problem(tmp_path):
    text = BASE.format(id="a", cu="true", dest="a.pth") + BASE.format(id="a", cu="true", dest="x.pth")
    text += BASE.format(id="c", cu='"maybe"', dest="/abs/c.pth")
    text += '\n[[file]]\nid = "b"\npipelines = ["nope"]\nsource = { hf = { repo = "r" } }\nformat = "exe"\ncommercial_use = true\ndest = "x.pth"\n'
    with pytest.raises(ManifestError) as err:
        load_manifest(write(tmp_path, text))
    message = str(err.value)
    for needle in ("commercial_use", "relative path", "duplicate id 'a'", "missing 'licence'"):
        assert needle in message, needle


def test_resolve_and_require(tmp_path):
    m = load_manifest(write(tmp_path, BASE.format(id="a", cu="true", dest="d/a.pth") + BASE.format(id="b", cu="true", dest="d/b.pth")))
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a.pth").write_bytes(b"x")
    assert resolve(tmp_path, "a", manifest=m) == tmp_path / "d/a.pth"
    with pytest.raises(WeightsMissing) as err:
        require(tmp_path, ["a", "b"], "sadtalker", manifest=m)
    assert err.value.pipeline == "sadtalker" and err.value.missing == ["b (d/b.pth)"]
    assert "scripts/download_weights.py sadtalker" in str(err.value)
    with pytest.raises(KeyError):
        resolve(tmp_path, "not-listed", manifest=m)
