"""The tiny-profile mechanism: hooks per pipeline, the PROFILE.json marker, the CLI wiring."""
from __future__ import annotations

import json
import sys
import types

import pytest

from pipelines.registry import PIPELINES
from pipelines.weights import profile_of, weights_command, weights_dir_for
from pipelines.weights.tiny import TINY_DIR, hook_names, write_tiny_profile


def fake_hook(name, files):
    module = types.ModuleType(name)

    def write_tiny(dest):
        for rel in files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(b"tiny")

    module.write_tiny = write_tiny
    return module


@pytest.fixture
def hooks(monkeypatch):
    monkeypatch.setitem(sys.modules, "pipelines.common.tiny", fake_hook(
        "pipelines.common.tiny", ["gfpgan/GFPGANv1.4.pth", "gfpgan/GFPGANv1.4.pth.config.json"]))
    monkeypatch.setitem(sys.modules, "pipelines.sadtalker.tiny", fake_hook(
        "pipelines.sadtalker.tiny", ["sadtalker/SadTalker_V0.0.2_256.safetensors", "sadtalker/stray.bin"]))
    monkeypatch.setitem(sys.modules, "pipelines.faceswap.tiny", types.ModuleType("pipelines.faceswap.tiny"))
    monkeypatch.setitem(PIPELINES, "ghost-endpoint", "pipelines.ghost.pipeline:GhostPipeline")


def test_hooks_run_and_profile_is_recorded(tmp_path, hooks, capsys):
    dest = tmp_path / "tiny"
    profile = write_tiny_profile(dest, ["sadtalker", "faceswap-v4", "ghost-endpoint"])
    assert profile_of(dest) == "tiny"
    assert json.loads((dest / "PROFILE.json").read_text()) == profile
    assert profile["hooks"] == ["pipelines.common.tiny", "pipelines.sadtalker.tiny"]
    assert profile["skipped_hooks"] == ["pipelines.faceswap.tiny", "pipelines.ghost.tiny"]
    assert profile["unlisted"] == ["sadtalker/stray.bin"]
    assert "sadtalker.bundle_512 (sadtalker/SadTalker_V0.0.2_512.safetensors)" in profile["missing_required"]
    assert not any("GFPGANv1.4" in m or "_256" in m for m in profile["missing_required"])
    out = capsys.readouterr().out
    assert "pipelines.ghost.tiny does not exist yet; skipped" in out
    assert "pipelines.faceswap.tiny has no write_tiny(dest) yet; skipped" in out

    (dest / "leftover.txt").write_text("from an older run")
    write_tiny_profile(dest, ["sadtalker"])
    assert not (dest / "leftover.txt").exists(), "a previous tiny profile is replaced"


def test_never_writes_into_a_real_weights_folder(tmp_path, hooks):
    (tmp_path / "gfpgan").mkdir()
    (tmp_path / "gfpgan/GFPGANv1.4.pth").write_bytes(b"real")
    with pytest.raises(FileExistsError):
        write_tiny_profile(tmp_path, ["sadtalker"])
    assert (tmp_path / "gfpgan/GFPGANv1.4.pth").read_bytes() == b"real"
    assert profile_of(tmp_path) == "full"


def test_hook_names_follow_the_registry():
    assert hook_names(list(PIPELINES)) == [
        "pipelines.common.tiny",
        "pipelines.expression_editor.tiny",
        "pipelines.faceswap.tiny",
        "pipelines.sadtalker.tiny",
        "pipelines.sticker.tiny",
        "pipelines.character.tiny",
    ]


def test_weights_dir_setting():
    assert weights_dir_for("tiny") == TINY_DIR
    assert weights_dir_for(None) == TINY_DIR.parent
    assert str(weights_dir_for("/srv/weights")) == "/srv/weights"


def test_cli_dispatch(tmp_path, hooks, capsys):
    assert weights_command(["list", "sadtalker"]) == 0
    assert "sadtalker.bundle_256" in capsys.readouterr().out
    assert weights_command(["tiny", "sadtalker", "--dest", str(tmp_path / "t")]) == 0
    assert profile_of(tmp_path / "t") == "tiny"
    assert weights_command(["frobnicate"]) == 2
