"""The downloader against a fake Hugging Face Hub and a plain file server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants

from pipelines.weights.download import STAGING_DIR, main
from tests.weights.servers import FakeServer, closed_port_url


def payload(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value) + '"'


def write_manifest(path: Path, entries: list[dict]) -> Path:
    blocks = []
    for e in entries:
        e = {"pipelines": ["sadtalker"], "format": "pth", "licence": "MIT", "commercial_use": True} | e
        blocks.append("[[file]]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in e.items()))
    path.write_text("\n\n".join(blocks) + "\n")
    return path


@pytest.fixture
def server(monkeypatch):
    with FakeServer() as s:
        monkeypatch.setenv("HF_ENDPOINT", s.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield s


def run(tmp_path: Path, manifest: Path, *args: str) -> int:
    return main(["--manifest", str(manifest), "--weights-dir", str(tmp_path / "w"), *args])


def test_hf_download_verifies_installs_and_is_idempotent(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    data = payload(300_000, 1)
    server.add_hf("org/model", "sub/net.pth", data)
    m = write_manifest(tmp_path / "m.toml", [{
        "id": "net", "dest": "org/net.pth", "sha256": sha(data), "size": len(data),
        "source": {"hf": {"repo": "org/model", "path": "sub/net.pth", "revision": "main"}},
    }])
    assert run(tmp_path, m) == 0
    assert (tmp_path / "w/org/net.pth").read_bytes() == data
    assert not list((tmp_path / "w" / STAGING_DIR).rglob("*.pth"))
    assert server.gets("/org/model/resolve/main/sub/net.pth")[0].get("authorization") == "Bearer hf_test_token"

    before = len(server.requests)
    assert run(tmp_path, m) == 0
    assert len(server.requests) == before, "a verified file is not fetched again"
    assert "ok        net" in capsys.readouterr().out


def test_hf_resumes_an_interrupted_transfer(tmp_path, server):
    # huggingface_hub resumes from the last whole chunk it wrote, so cut after more than one
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    data = payload(2 * chunk + 4096, 2)
    server.add_hf("org/model", "big.safetensors", data)
    server.cut["/org/model/resolve/main/big.safetensors"] = 1
    m = write_manifest(tmp_path / "m.toml", [{
        "id": "big", "dest": "big.safetensors", "format": "safetensors", "sha256": sha(data), "size": len(data),
        "source": {"hf": {"repo": "org/model", "path": "big.safetensors", "revision": "main"}},
    }])
    assert run(tmp_path, m) == 0
    assert (tmp_path / "w/big.safetensors").read_bytes() == data
    ranges = [h.get("range") for h in server.gets("big.safetensors")]
    assert ranges[0] is None and ranges[-1] == f"bytes={chunk}-"


def test_url_zip_members_extracted_from_one_download(tmp_path, server):
    a, b = payload(50_000, 3), payload(70_000, 4)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pack/a.onnx", a)
        z.writestr("pack/b.onnx", b)
    archive = buf.getvalue()
    url = server.add("/releases/download/v0.7/pack.zip", archive)
    source = {"url": url, "archive_sha256": sha(archive), "archive_size": len(archive)}
    m = write_manifest(tmp_path / "m.toml", [
        {"id": "pack.a", "dest": "models/pack/a.onnx", "format": "onnx", "sha256": sha(a), "size": len(a),
         "source": source | {"member": "pack/a.onnx"}},
        {"id": "pack.b", "dest": "models/pack/b.onnx", "format": "onnx", "sha256": sha(b),
         "source": source | {"member": "pack/b.onnx"}},
    ])
    assert run(tmp_path, m) == 0
    assert (tmp_path / "w/models/pack/a.onnx").read_bytes() == a
    assert (tmp_path / "w/models/pack/b.onnx").read_bytes() == b
    assert len(server.gets("pack.zip")) == 1
    assert not list((tmp_path / "w" / STAGING_DIR).rglob("*pack.zip")), "the archive is removed once used"


def test_url_download_resumes_on_the_next_run(tmp_path, server, capsys):
    data = payload(2_000_000, 5)
    url = server.add("/releases/GFPGANv1.4.pth", data)
    server.cut["/releases/GFPGANv1.4.pth"] = 3  # every attempt of the first run drops
    m = write_manifest(tmp_path / "m.toml", [
        {"id": "gfpgan", "dest": "gfpgan/GFPGANv1.4.pth", "sha256": sha(data), "size": len(data), "source": {"url": url}},
    ])
    assert run(tmp_path, m) == 1
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "w/gfpgan/GFPGANv1.4.pth").exists()

    kept = next((tmp_path / "w" / STAGING_DIR).rglob("gfpgan.part")).stat().st_size
    assert 0 < kept < len(data)
    assert run(tmp_path, m) == 0
    assert (tmp_path / "w/gfpgan/GFPGANv1.4.pth").read_bytes() == data
    assert server.gets("GFPGANv1.4.pth")[-1].get("range") == f"bytes={kept}-"


@pytest.mark.parametrize("kind", ["hf", "url"])
def test_checksum_mismatch_is_not_installed(tmp_path, server, capsys, kind):
    data = payload(10_000, 6)
    server.add_hf("org/model", "w.pth", data)
    url = server.add("/w.pth", data)
    source = {"hf": {"repo": "org/model", "path": "w.pth", "revision": "main"}} if kind == "hf" else {"url": url}
    m = write_manifest(tmp_path / "m.toml", [{"id": "w", "dest": "w.pth", "sha256": "0" * 64, "source": source}])
    assert run(tmp_path, m) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "not installed" in err
    assert not (tmp_path / "w/w.pth").exists()
    assert not [p for p in (tmp_path / "w" / STAGING_DIR).rglob("*") if p.is_file() and p.suffix == ".pth"]


def test_missing_upstream_file_is_a_clear_error(tmp_path, server, capsys):
    m = write_manifest(tmp_path / "m.toml", [
        {"id": "gone.hf", "dest": "a.pth", "source": {"hf": {"repo": "org/model", "path": "nope.pth", "revision": "main"}}},
        {"id": "gone.url", "dest": "b.pth", "source": {"url": server.url + "/nope.pth"}},
    ])
    assert run(tmp_path, m) == 1
    err = capsys.readouterr().err
    assert "gone.hf: nope.pth not found in org/model (HTTP 404)" in err
    assert "gone.url: not found at" in err and "404" in err


def test_offline_gives_one_message_naming_what_is_missing(tmp_path, monkeypatch, capsys):
    dead = closed_port_url()
    monkeypatch.setenv("HF_ENDPOINT", dead)
    m = write_manifest(tmp_path / "m.toml", [
        {"id": "lp.f", "dest": "lp/f.pth", "source": {"hf": {"repo": "org/lp", "path": "f.pth", "revision": "main"}}},
        {"id": "pack.det", "dest": "pack/det.onnx", "format": "onnx", "source": {"url": dead + "/pack.zip", "member": "det.onnx"}},
    ])
    assert run(tmp_path, m) == 1
    err = capsys.readouterr().err
    assert err.count("offline: cannot reach") == 1
    assert "lp.f" in err and "pack.det" in err and str(tmp_path / "w/lp/f.pth") in err


def test_check_reports_present_missing_corrupt(tmp_path, capsys):
    good, bad = payload(1000, 7), payload(1000, 8)
    m = write_manifest(tmp_path / "m.toml", [
        {"id": "good", "dest": "good.pth", "sha256": sha(good), "source": {"url": "https://example.invalid/good.pth"}},
        {"id": "bad", "dest": "bad.pth", "sha256": sha(good), "source": {"url": "https://example.invalid/bad.pth"}},
        {"id": "gone", "dest": "gone.pth", "source": {"url": "https://example.invalid/gone.pth"}},
        {"id": "extra", "dest": "extra.pth", "required": False, "source": {"url": "https://example.invalid/extra.pth"}},
    ])
    (tmp_path / "w").mkdir()
    (tmp_path / "w/good.pth").write_bytes(good)
    (tmp_path / "w/bad.pth").write_bytes(bad)
    assert run(tmp_path, m, "--check") == 1
    out = capsys.readouterr().out.splitlines()
    lines = {dest: next(line for line in out if f" {dest}" in line) for dest in ("good.pth", "bad.pth", "gone.pth", "extra.pth")}
    assert lines["good.pth"].startswith("present")
    assert lines["bad.pth"].startswith("corrupt") and "sha256" in lines["bad.pth"]
    assert lines["gone.pth"].startswith("missing")
    assert lines["extra.pth"].startswith("missing (optional)")

    (tmp_path / "w/bad.pth").write_bytes(good)
    (tmp_path / "w/gone.pth").write_bytes(b"anything: unpinned files are recorded on first sight")
    assert run(tmp_path, m, "--check") == 0
    (tmp_path / "w/gone.pth").write_bytes(b"changed afterwards")
    assert run(tmp_path, m, "--check") == 1, "an unpinned file is held to the hash recorded first"


def test_noncommercial_needs_the_flag(tmp_path, server, capsys):
    data = payload(5000, 9)
    server.add_hf("deepinsight/swap", "inswapper_128.onnx", data)
    m = write_manifest(tmp_path / "m.toml", [{
        "id": "inswapper_128", "dest": "insightface/inswapper_128.onnx", "format": "onnx",
        "licence": "InsightFace: non-commercial research only", "commercial_use": False, "sha256": sha(data),
        "source": {"hf": {"repo": "deepinsight/swap", "path": "inswapper_128.onnx", "revision": "main"}},
    }])
    assert run(tmp_path, m) == 1
    out = capsys.readouterr().out
    assert "refused   inswapper_128" in out and "non-commercial research only" in out
    assert not server.gets("inswapper_128.onnx")

    assert run(tmp_path, m, "--allow-noncommercial") == 0
    assert "InsightFace: non-commercial research only" in capsys.readouterr().out
    assert (tmp_path / "w/insightface/inswapper_128.onnx").read_bytes() == data


def test_unknown_pipeline_is_rejected(capsys):
    assert main(["no-such-endpoint", "--check"]) == 2
    assert "unknown pipeline" in capsys.readouterr().err
