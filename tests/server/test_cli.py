"""The facefoundry command: keys, weights delegation, and the server's torch-free imports."""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from server import cli
from server.auth import KeyStore, hash_key

REPO = Path(__file__).resolve().parents[2]


def test_server_never_imports_torch():
    code = ("import sys, server.app, server.cli, server.jobs, server.media; "
            "server.app.create_app(server.settings.Settings(keys_file='/nonexistent/k.json')); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_keys_lifecycle(tmp_path, capsys):
    keys = str(tmp_path / "keys.json")
    assert cli.main(["keys", "--keys-file", keys, "add", "SG_7f3a9c2e5b8d1f46", "--credits", "5",
                     "--models", "faceswap-v4,sadtalker", "--rpm", "10"]) == 0
    stored = json.loads(Path(keys).read_text())["keys"][0]
    assert stored["hash"] == hash_key("SG_7f3a9c2e5b8d1f46") and "SG_7f3a9c2e5b8d1f46" not in Path(keys).read_text()
    assert stored["models"] == ["faceswap-v4", "sadtalker"] and stored["rpm"] == 10 and stored["credits"] == 5
    assert cli.main(["keys", "--keys-file", keys, "credit", "SG_7f3a9c2e5b8d1f46", "2.5"]) == 0
    assert "now has 7.5 credits" in capsys.readouterr().out
    assert cli.main(["keys", "--keys-file", keys, "list"]) == 0
    listing = capsys.readouterr().out
    assert stored["id"] in listing and "7.5" in listing and "SG_7f3a9c2e5b8d1f46" not in listing
    assert cli.main(["keys", "--keys-file", keys, "revoke", "SG_7f3a9c2e5b8d1f46"]) == 0
    assert KeyStore(keys).find("SG_7f3a9c2e5b8d1f46") is None
    assert cli.main(["keys", "--keys-file", keys, "revoke", "SG_nope"]) == 1


def test_keys_add_generates_a_segmind_style_key(tmp_path, capsys):
    keys = str(tmp_path / "keys.json")
    assert cli.main(["keys", "--keys-file", keys, "add"]) == 0
    key = capsys.readouterr().out.split()[1]
    assert key.startswith("SG_") and len(key) == 19
    assert KeyStore(keys).find(key) is not None
    with pytest.raises(ValueError):
        KeyStore(keys).add(key)


def test_weights_commands_delegate(monkeypatch):
    calls = []
    package = types.ModuleType("pipelines.weights")
    download = types.ModuleType("pipelines.weights.download")
    tiny = types.ModuleType("pipelines.weights.tiny")
    download.main = lambda argv: calls.append(("download", argv)) or 0
    tiny.main = lambda argv: calls.append(("tiny", argv)) or 0
    monkeypatch.setitem(sys.modules, "pipelines.weights", package)
    monkeypatch.setitem(sys.modules, "pipelines.weights.download", download)
    monkeypatch.setitem(sys.modules, "pipelines.weights.tiny", tiny)
    assert cli.main(["weights", "download", "sadtalker"]) == 0
    assert cli.main(["weights", "check"]) == 0
    assert cli.main(["weights", "tiny", "--out", "x"]) == 0
    assert calls == [("download", ["sadtalker"]), ("download", ["--check"]), ("tiny", ["--out", "x"])]


def test_weights_command_without_the_tool(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pipelines.weights.download", None)  # import raises ImportError
    assert cli.main(["weights", "download"]) == 2
    assert "is not available in this installation" in capsys.readouterr().err


def test_serve_help_lists_the_settings(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = capsys.readouterr().out
    for flag in ("--no-auth", "--weights", "--public-base-url", "--device", "--queue-max", "--fetch-allow"):
        assert flag in text
