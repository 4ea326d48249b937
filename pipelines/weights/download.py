"""``scripts/download_weights.py [PIPELINE…]``: fetch, verify and install the manifest's files.

Every file is downloaded into ``<weights>/.staging/``, checked against the manifest's size and
sha256, and only then moved to its ``dest`` (one ``os.replace``), so a truncated or tampered file
never lands where a loader would read it. Hugging Face files go through ``hf_hub_download``
(``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` apply; an interrupted transfer resumes with
Range requests inside the call); plain URLs (GitHub release assets, zips) are streamed with httpx
into a ``.part`` file that the next attempt or run resumes. Files without a pinned sha256 are
hashed on first install and the hash is recorded in ``<weights>/.verified.json`` (trust on first
use), which ``--check`` then holds them to; that file also caches hashes by size and mtime so
``--check`` does not re-read gigabytes every time.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pipelines.registry import PIPELINES, built_slugs
from pipelines.weights.manifest import DEFAULT_WEIGHTS_DIR, Entry, load_manifest

STATE_FILE = ".verified.json"
STAGING_DIR = ".staging"
CHUNK = 1 << 20
URL_ATTEMPTS = 3
HF_DEFAULT_ENDPOINT = "https://huggingface.co"


class DownloadError(RuntimeError):
    """A file could not be fetched or failed verification; it was not installed."""


class Unreachable(DownloadError):
    """The file's host could not be reached (offline, DNS, refused connection)."""


@dataclass
class Status:
    entry: Entry
    state: str  # "present" | "missing" | "corrupt"
    detail: str = ""


class VerifiedStore:
    """sha256 of installed files keyed by dest, valid while size and mtime are unchanged."""

    def __init__(self, weights_dir: Path):
        self.path = weights_dir / STATE_FILE
        self.records: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def cached_sha256(self, entry: Entry, path: Path) -> str | None:
        record = self.records.get(entry.dest)
        stat = path.stat()
        if record and record["size"] == stat.st_size and record["mtime_ns"] == stat.st_mtime_ns:
            return record["sha256"]
        return None

    def pinned_sha256(self, entry: Entry) -> str | None:
        """The manifest's hash, else the one recorded when the file was first installed."""
        record = self.records.get(entry.dest)
        return entry.sha256 or (record or {}).get("sha256")

    def record(self, entry: Entry, path: Path, sha256: str) -> None:
        stat = path.stat()
        self.records[entry.dest] = {
            "id": entry.id,
            "sha256": sha256,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def check_file(weights_dir: Path, entry: Entry, store: VerifiedStore) -> Status:
    """present / missing / corrupt, from the size and sha256 of the installed file."""
    path = weights_dir / entry.dest
    if not path.is_file():
        return Status(entry, "missing")
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return Status(entry, "corrupt", f"size {size} B, manifest says {entry.size} B")
    pinned = store.pinned_sha256(entry)
    sha = store.cached_sha256(entry, path) or sha256_of(path)
    if pinned is not None and sha != pinned:
        return Status(entry, "corrupt", f"sha256 {sha[:12]}…, expected {pinned[:12]}…")
    store.record(entry, path, sha)
    detail = "" if entry.sha256 else f"not pinned in the manifest; recorded sha256 {sha}"
    return Status(entry, "present", detail)


def verify_staged(entry: Entry, staged: Path) -> str:
    """The staged file's sha256 if it matches the manifest; DownloadError (file removed) if not."""
    size = staged.stat().st_size
    if entry.size is not None and size != entry.size:
        staged.unlink()
        raise DownloadError(
            f"{entry.id}: downloaded {size} B but the manifest says {entry.size} B; not installed"
        )
    sha = sha256_of(staged)
    if entry.sha256 is not None and sha != entry.sha256:
        staged.unlink()
        raise DownloadError(
            f"{entry.id}: checksum mismatch (sha256 {sha}, manifest {entry.sha256}); not installed"
        )
    return sha


def install(entry: Entry, staged: Path, weights_dir: Path, store: VerifiedStore) -> str:
    sha = verify_staged(entry, staged)
    dest = weights_dir / entry.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, dest)
    store.record(entry, dest, sha)
    return sha


def fetch_hf(entry: Entry, staging: Path) -> Path:
    """Download an ``hf`` entry into ``staging/hf/<id>/`` through huggingface_hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hf_errors

    hf = entry.source["hf"]
    local_dir = staging / "hf" / entry.id
    try:
        return Path(
            hf_hub_download(
                repo_id=hf["repo"],
                filename=hf["path"],
                revision=hf.get("revision", "main"),
                repo_type=hf.get("repo_type"),
                local_dir=local_dir,
                # read at call time so that HF_ENDPOINT set after import is honoured
                endpoint=os.environ.get("HF_ENDPOINT") or None,
            )
        )
    except hf_errors.LocalEntryNotFoundError as err:
        raise Unreachable(f"{entry.id}: cannot reach the Hugging Face Hub ({_first_line(err)})") from err
    except hf_errors.GatedRepoError as err:
        raise DownloadError(
            f"{entry.id}: {hf['repo']} is gated: accept its terms on the Hub and set HF_TOKEN"
        ) from err
    except hf_errors.RepositoryNotFoundError as err:
        raise DownloadError(
            f"{entry.id}: repository {hf['repo']} not found (private repositories need HF_TOKEN)"
        ) from err
    except hf_errors.RevisionNotFoundError as err:
        raise DownloadError(f"{entry.id}: revision {hf.get('revision')} not found in {hf['repo']}") from err
    except hf_errors.EntryNotFoundError as err:
        raise DownloadError(f"{entry.id}: {hf['path']} not found in {hf['repo']} (HTTP 404)") from err
    except (hf_errors.HfHubHTTPError, OSError) as err:
        raise DownloadError(f"{entry.id}: download from {entry.origin} failed: {_first_line(err)}") from err


def fetch_url(url: str, part: Path, desc: str) -> Path:
    """Stream ``url`` into ``part``, resuming what an earlier attempt or run left there."""
    import httpx
    from tqdm import tqdm

    part.parent.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _ in range(URL_ATTEMPTS):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=30) as r:
                if r.status_code == 416 and have:
                    return part  # nothing left to send: the part file is complete
                if r.status_code == 404:
                    raise DownloadError(f"{desc}: not found at {url} (HTTP 404)")
                r.raise_for_status()
                if have and r.status_code != 206:
                    have = 0  # the server ignored the Range header: start over
                length = r.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with part.open("ab" if have else "wb") as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=desc, leave=False
                ) as bar:
                    for block in r.iter_bytes():
                        f.write(block)
                        bar.update(len(block))
            if total is None or part.stat().st_size >= total:
                return part
            last_error = DownloadError(f"{desc}: connection closed early")
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise Unreachable(f"{desc}: cannot reach {_origin(url)} ({err})") from err
        except httpx.HTTPStatusError as err:
            raise DownloadError(f"{desc}: {url} answered HTTP {err.response.status_code}") from err
        except (httpx.TransportError, httpx.StreamError) as err:
            last_error = err
        time.sleep(0.2)
    raise DownloadError(
        f"{desc}: transfer of {url} was interrupted {URL_ATTEMPTS} times ({last_error}); "
        f"{part.stat().st_size if part.exists() else 0} B are kept and the next run resumes them"
    )


def archive_part(staging: Path, url: str) -> Path:
    name = Path(urlsplit(url).path).name or "archive"
    return staging / "archives" / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def fetch_archive(entry: Entry, staging: Path, verified: set[Path]) -> Path:
    """The zip named by a ``url`` + ``member`` entry, downloaded (once per run) and verified."""
    source = entry.source
    part = archive_part(staging, source["url"])
    if part in verified:
        return part
    fetch_url(source["url"], part, Path(part.name).name)
    size = part.stat().st_size
    expected_size = source.get("archive_size")
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise DownloadError(f"{entry.id}: archive is {size} B, manifest says {expected_size} B; removed")
    expected_sha = source.get("archive_sha256")
    if expected_sha is not None and sha256_of(part) != expected_sha:
        part.unlink()
        raise DownloadError(f"{entry.id}: archive checksum mismatch for {source['url']}; removed")
    verified.add(part)
    return part


def extract_member(entry: Entry, archive: Path, staging: Path) -> Path:
    member = entry.source["member"]
    out = staging / "members" / entry.id / Path(member).name
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as z:
            try:
                info = z.getinfo(member)
            except KeyError:
                raise DownloadError(
                    f"{entry.id}: {member} is not in {entry.source['url']} "
                    f"(members: {', '.join(z.namelist()[:10])})"
                ) from None
            with z.open(info) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
    except zipfile.BadZipFile as err:
        archive.unlink()
        raise DownloadError(f"{entry.id}: {entry.source['url']} is not a valid zip ({err}); removed") from err
    return out


def source_origin(entry: Entry) -> str:
    if "hf" in entry.source:
        return os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT
    return _origin(entry.source["url"])


def unreachable_reason(origin: str) -> str | None:
    """None if ``origin`` answers HTTP at all, else why not (checked once per host per run)."""
    import httpx

    if origin == (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT) and _truthy("HF_HUB_OFFLINE"):
        return "HF_HUB_OFFLINE is set"
    try:
        httpx.head(origin + "/", timeout=10)
    except httpx.TransportError as err:
        return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return None


def select(manifest, slugs: list[str], with_optional: bool) -> list[Entry]:
    chosen: dict[str, Entry] = {}
    for slug in slugs:
        for entry in manifest.for_pipeline(slug):
            if entry.required or with_optional:
                chosen.setdefault(entry.id, entry)
    return list(chosen.values())


def print_list(entries: list[Entry]) -> None:
    for e in entries:
        size = f"{e.size / 1e6:,.1f} MB" if e.size else "size ?"
        flag = {True: "commercial ok", False: "NON-COMMERCIAL", "unknown": "commercial use unknown"}[
            e.commercial_use
        ]
        optional = "" if e.required else " (optional)"
        print(f"{e.id}{optional}\n    {e.dest}  {size}  {e.licence} [{flag}]\n    from {e.origin}")


def run_check(weights_dir: Path, entries: list[Entry]) -> int:
    store = VerifiedStore(weights_dir)
    bad = 0
    for e in entries:
        status = check_file(weights_dir, e, store)
        label = status.state + ("" if e.required else " (optional)")
        print(f"{label:20s} {e.id:48s} {e.dest}" + (f"  [{status.detail}]" if status.detail else ""))
        if e.required and status.state != "present":
            bad += 1
    print(f"{len(entries) - bad}/{len(entries)} files OK" if not bad else f"{bad} required file(s) missing or corrupt")
    return 1 if bad else 0


def run_download(weights_dir: Path, entries: list[Entry], allow_noncommercial: bool) -> int:
    store = VerifiedStore(weights_dir)
    staging = weights_dir / STAGING_DIR
    todo: list[Entry] = []
    for e in entries:
        status = check_file(weights_dir, e, store)
        if status.state == "present":
            print(f"ok        {e.id}")
            continue
        if status.state == "corrupt":
            print(f"corrupt   {e.id}: {status.detail}; downloading again")
        todo.append(e)

    refused = [e for e in todo if e.non_commercial and not allow_noncommercial]
    for e in refused:
        print(f"refused   {e.id}: licence {e.licence!r} is non-commercial; pass --allow-noncommercial to fetch it")
    todo = [e for e in todo if e not in refused]
    for e in todo:
        if e.non_commercial:
            print(f"licence   {e.id}: {e.licence} (non-commercial; fetched because --allow-noncommercial)")
        elif e.commercial_use == "unknown":
            print(f"licence   {e.id}: {e.licence} (commercial use unknown: review before commercial use)")

    reasons = {o: unreachable_reason(o) for o in sorted({source_origin(e) for e in todo})}
    offline: list[Entry] = []
    failures: list[str] = []
    verified_archives: set[Path] = set()
    archive_failed: set[Path] = set()
    for e in todo:
        if reasons[source_origin(e)]:
            offline.append(e)
            continue
        try:
            if "hf" in e.source:
                staged = fetch_hf(e, staging)
            elif "member" in e.source:
                archive = fetch_archive(e, staging, verified_archives)
                staged = extract_member(e, archive, staging)
            else:
                staged = fetch_url(e.source["url"], staging / "url" / f"{e.id}.part", e.id)
            install(e, staged, weights_dir, store)
            print(f"installed {e.id} -> {e.dest}")
        except Unreachable as err:
            reasons[source_origin(e)] = str(err)
            offline.append(e)
        except DownloadError as err:
            failures.append(str(err))
            if "member" in e.source:
                archive_failed.add(archive_part(staging, e.source["url"]))
        finally:
            shutil.rmtree(staging / "hf" / e.id, ignore_errors=True)
            shutil.rmtree(staging / "members" / e.id, ignore_errors=True)
    for archive in verified_archives - archive_failed:
        archive.unlink(missing_ok=True)

    if offline:
        hosts = ", ".join(f"{o} ({r})" for o, r in reasons.items() if r)
        print(f"\noffline: cannot reach {hosts}. These files are missing:", file=sys.stderr)
        for e in offline:
            print(f"  {e.id:48s} -> {weights_dir / e.dest}   from {e.origin}", file=sys.stderr)
        print("Run again with network access, or place the files at those paths and run --check.", file=sys.stderr)
    for message in failures:
        print(f"error     {message}", file=sys.stderr)
    blocking = [e for e in refused + offline if e.required]
    return 1 if failures or blocking else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="download_weights.py",
        description="Fetch, verify (size + sha256) and install the checkpoint files of the manifest.",
    )
    p.add_argument("pipelines", nargs="*", metavar="PIPELINE", help=f"any of {', '.join(PIPELINES)} (default: every built one)")
    p.add_argument("--check", action="store_true", help="report present / missing / corrupt; download nothing")
    p.add_argument("--list", action="store_true", help="list the files, their sources and licences")
    p.add_argument("--allow-noncommercial", action="store_true", help="also fetch files whose licence forbids commercial use")
    p.add_argument("--with-optional", action="store_true", help="include files marked optional")
    p.add_argument("--weights-dir", type=Path, default=None, help="install root (default: FACEFOUNDRY_WEIGHTS_DIR or weights/)")
    p.add_argument("--manifest", type=Path, default=None, help="manifest to read (default: weights/manifest.toml)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [s for s in args.pipelines if s not in PIPELINES]
    if unknown:
        print(f"unknown pipeline(s) {unknown}; choose from {', '.join(PIPELINES)}", file=sys.stderr)
        return 2
    manifest = load_manifest(args.manifest)
    # With no argument, only the endpoints this version serves (issue 9): a named one is still fetched.
    slugs = args.pipelines or built_slugs()
    weights_dir = args.weights_dir or Path(os.environ.get("FACEFOUNDRY_WEIGHTS_DIR", DEFAULT_WEIGHTS_DIR))
    entries = select(manifest, slugs, args.with_optional or args.list or args.check)
    if args.list:
        print_list(entries)
        return 0
    if args.check:
        return run_check(weights_dir, entries)
    return run_download(weights_dir, entries, args.allow_noncommercial)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
