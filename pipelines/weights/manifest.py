"""The weights manifest: every file a pipeline loads, where it comes from, what it must hash to.

``weights/manifest.toml`` is the single list of checkpoint files. Loaders never name paths of
their own: they ask ``resolve(weights_dir, "<entry id>")`` for the installed path, so the real
layout and the tiny profile (``weights/tiny/``, same relative paths) load through the same code.
This module imports no torch (the server reads it).
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from pipelines.base import WeightsMissing
from pipelines.registry import PIPELINES

REPO = Path(__file__).resolve().parents[2]
# A checkout keeps both in weights/; an installed package (the Docker image) names them by env.
DEFAULT_MANIFEST = Path(os.environ.get("FACEFOUNDRY_MANIFEST", REPO / "weights" / "manifest.toml"))
DEFAULT_WEIGHTS_DIR = Path(os.environ.get("FACEFOUNDRY_WEIGHTS_DIR", REPO / "weights"))

# "pth"/"bin": torch pickles holding tensors (weights_only loads them); "pt": a pickled model
# object (an ultralytics checkpoint) that needs a restricted unpickler. Zip archives are only
# ever a source (``source.member``), never an installed file.
FORMATS = {"pth", "pt", "bin", "safetensors", "onnx", "mat", "png", "json", "txt"}
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


class ManifestError(ValueError):
    """The manifest is malformed; the message lists every problem found."""


@dataclass(frozen=True)
class Entry:
    """One file: where it comes from, what it must be, and where it is installed."""

    id: str
    pipelines: tuple[str, ...]
    source: dict[str, Any]
    format: str
    licence: str
    commercial_use: bool | str  # True, False or "unknown"
    dest: str
    sha256: str | None = None
    size: int | None = None
    required: bool = True
    notes: str = ""

    @property
    def non_commercial(self) -> bool:
        return self.commercial_use is False

    @property
    def origin(self) -> str:
        """Human-readable source, e.g. ``hf:KwaiVGI/LivePortrait@main/path`` or the URL."""
        if "hf" in self.source:
            hf = self.source["hf"]
            return f"hf:{hf['repo']}@{hf.get('revision', 'main')}/{hf['path']}"
        member = self.source.get("member")
        return self.source["url"] + (f" [{member}]" if member else "")


@dataclass
class Manifest:
    entries: dict[str, Entry] = field(default_factory=dict)
    path: Path | None = None

    def for_pipeline(self, slug: str) -> list[Entry]:
        """Every entry the pipeline ``slug`` uses, required and optional, in manifest order."""
        return [e for e in self.entries.values() if slug in e.pipelines]

    def by_dest(self) -> dict[str, Entry]:
        return {e.dest: e for e in self.entries.values()}

    def __getitem__(self, entry_id: str) -> Entry:
        return self.entries[entry_id]


def load_manifest(path: Path | str | None = None) -> Manifest:
    """Read and validate a manifest (default ``weights/manifest.toml``); ManifestError if malformed."""
    return _load_manifest(Path(path) if path is not None else DEFAULT_MANIFEST)


@lru_cache(maxsize=8)
def _load_manifest(path: Path) -> Manifest:
    with path.open("rb") as f:
        raw = tomllib.load(f)
    problems: list[str] = []
    entries: dict[str, Entry] = {}
    dests: dict[str, str] = {}
    for index, item in enumerate(raw.get("file", [])):
        entry = _entry_from(item, f"file #{index + 1} ({item.get('id', '?')})", problems)
        if entry is None:
            continue
        if entry.id in entries:
            problems.append(f"duplicate id {entry.id!r}")
        if entry.dest in dests:
            problems.append(f"{entry.id}: dest {entry.dest!r} already used by {dests[entry.dest]}")
        entries[entry.id] = entry
        dests[entry.dest] = entry.id
    if problems:
        raise ManifestError(f"{path}: " + "; ".join(problems))
    return Manifest(entries=entries, path=path)


def _entry_from(item: dict, where: str, problems: list[str]) -> Entry | None:
    before = len(problems)
    for key in ("id", "pipelines", "source", "format", "licence", "commercial_use", "dest"):
        if key not in item:
            problems.append(f"{where}: missing {key!r}")
    unknown = set(item) - {f.name for f in Entry.__dataclass_fields__.values()}
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}")
    if len(problems) > before:
        return None
    if not ID_RE.match(item["id"]):
        problems.append(f"{where}: id must be lower-case [a-z0-9_.-]")
    pipelines = item["pipelines"]
    if not pipelines or any(p not in PIPELINES for p in pipelines):
        problems.append(f"{where}: pipelines {pipelines} must be non-empty slugs of {sorted(PIPELINES)}")
    _check_source(item["source"], where, problems)
    if item["format"] not in FORMATS:
        problems.append(f"{where}: format {item['format']!r} not one of {sorted(FORMATS)}")
    if item["commercial_use"] not in (True, False, "unknown"):
        problems.append(f"{where}: commercial_use must be true, false or \"unknown\"")
    if not str(item["licence"]).strip():
        problems.append(f"{where}: empty licence")
    dest = PurePosixPath(item["dest"])
    if dest.is_absolute() or ".." in dest.parts or not dest.parts or dest.parts[0] == "tiny":
        problems.append(f"{where}: dest must be a relative path under weights/ (not tiny/)")
    sha = item.get("sha256")
    if sha is not None and not SHA256_RE.match(sha):
        problems.append(f"{where}: sha256 must be 64 lower-case hex digits")
    size = item.get("size")
    if size is not None and (not isinstance(size, int) or size <= 0):
        problems.append(f"{where}: size must be a positive integer (bytes)")
    if len(problems) > before:
        return None
    return Entry(
        id=item["id"],
        pipelines=tuple(pipelines),
        source=item["source"],
        format=item["format"],
        licence=item["licence"],
        commercial_use=item["commercial_use"],
        dest=str(dest),
        sha256=sha,
        size=size,
        required=bool(item.get("required", True)),
        notes=item.get("notes", ""),
    )


def _check_source(source: Any, where: str, problems: list[str]) -> None:
    if not isinstance(source, dict) or ("hf" in source) == ("url" in source):
        problems.append(f"{where}: source must have exactly one of 'hf' or 'url'")
        return
    if "hf" in source:
        hf = source["hf"]
        if set(source) != {"hf"} or not isinstance(hf, dict) or not {"repo", "path"} <= set(hf):
            problems.append(f"{where}: source.hf needs repo and path (and a revision)")
        elif set(hf) - {"repo", "path", "revision", "repo_type"}:
            problems.append(f"{where}: unknown keys in source.hf {sorted(set(hf) - {'repo', 'path', 'revision', 'repo_type'})}")
        return
    allowed = {"url", "member", "archive_sha256", "archive_size"}
    if set(source) - allowed:
        problems.append(f"{where}: unknown keys in source {sorted(set(source) - allowed)}")
    if not str(source["url"]).startswith(("https://", "http://")):
        problems.append(f"{where}: source.url must be http(s)")
    if ("archive_sha256" in source or "archive_size" in source) and "member" not in source:
        problems.append(f"{where}: archive_sha256/archive_size only make sense with a member")
    archive_sha = source.get("archive_sha256")
    if archive_sha is not None and not SHA256_RE.match(archive_sha):
        problems.append(f"{where}: archive_sha256 must be 64 lower-case hex digits")


def resolve(
    weights_dir: Path | str,
    entry_id: str,
    pipeline: str | None = None,
    manifest: Manifest | None = None,
) -> Path:
    """The installed path of ``entry_id`` under ``weights_dir``; WeightsMissing naming the pipeline if absent.

    Only existence is checked here (loading must stay fast); ``download.py --check`` verifies hashes.
    """
    return require(weights_dir, [entry_id], pipeline, manifest)[entry_id]


def require(
    weights_dir: Path | str,
    entry_ids: list[str],
    pipeline: str | None = None,
    manifest: Manifest | None = None,
) -> dict[str, Path]:
    """Installed paths of several entries; one WeightsMissing listing every absent file."""
    manifest = manifest or load_manifest()
    weights_dir = Path(weights_dir)
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for entry_id in entry_ids:
        entry = manifest.entries.get(entry_id)
        if entry is None:
            raise KeyError(f"{entry_id!r} is not in the weights manifest {manifest.path}")
        path = weights_dir / entry.dest
        if path.is_file():
            paths[entry_id] = path
        else:
            missing.append(f"{entry.id} ({entry.dest})")
    if missing:
        owner = pipeline or manifest.entries[entry_ids[0]].pipelines[0]
        raise WeightsMissing(owner, missing)
    return paths
