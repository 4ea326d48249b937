"""``scripts/make_tiny_weights.py``: the tiny profile, ``weights/tiny/``.

The tiny profile mirrors the real layout file for file: each checkpoint is a small random one in
the same file format and key layout as the official file, with its small configuration beside it
(``<file>.config.json``, see pipelines/common/checkpoint.py), so the production loaders run on it
unchanged. The networks are built by the engineers who own them, so the writers live with them:
every pipeline package may have a ``tiny`` module with ``write_tiny(dest: Path) -> None`` that
writes its files at their manifest ``dest`` paths under ``dest``; ``pipelines.common.tiny`` writes
the shared ones (insightface packs, inswapper, GFPGAN, face parser, SDXL parts). This module only
runs those hooks and leaves the ``PROFILE.json`` marker that the server reads.
"""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import time
from pathlib import Path
from types import ModuleType

from pipelines import registry
from pipelines.weights import PROFILE_FILE, weights_dir_for
from pipelines.weights.manifest import load_manifest

TINY_DIR = weights_dir_for("tiny")
COMMON_HOOK = "pipelines.common.tiny"
SIDECAR_SUFFIX = ".config.json"


def package_of(slug: str) -> str:
    """``pipelines.faceswap`` for ``faceswap-v4`` (the package of the registered pipeline class)."""
    return registry.PIPELINES[slug].partition(":")[0].rpartition(".")[0]


def hook_names(slugs: list[str]) -> list[str]:
    names = [COMMON_HOOK] + [f"{package_of(s)}.tiny" for s in slugs]
    return list(dict.fromkeys(names))


def load_hook(name: str) -> ModuleType | None:
    """The hook module, or None when it (or its package) does not exist yet."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
            return None
        raise


def write_tiny_profile(dest: Path | str = TINY_DIR, pipelines: list[str] | None = None) -> dict:
    """Run every tiny hook into ``dest`` and write ``PROFILE.json``; returns the profile record."""
    dest = Path(dest)
    slugs = list(pipelines or registry.PIPELINES)
    unknown = [s for s in slugs if s not in registry.PIPELINES]
    if unknown:
        raise KeyError(f"unknown pipeline(s) {unknown}")
    _prepare(dest)

    ran, skipped, seconds = [], [], {}
    for name in hook_names(slugs):
        hook = load_hook(name)
        if hook is None or not hasattr(hook, "write_tiny"):
            why = "does not exist yet" if hook is None else "has no write_tiny(dest) yet"
            print(f"tiny: {name} {why}; skipped")
            skipped.append(name)
            continue
        start = time.perf_counter()
        hook.write_tiny(dest)
        seconds[name] = round(time.perf_counter() - start, 2)
        ran.append(name)
        print(f"tiny: {name} wrote its files in {seconds[name]:.1f} s")

    manifest = load_manifest()
    written = sorted(
        p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and p.name != PROFILE_FILE
    )
    known = set(manifest.by_dest())
    unlisted = [f for f in written if f not in known and f.removesuffix(SIDECAR_SUFFIX) not in known]
    wanted = {e.dest: e for s in slugs for e in manifest.for_pipeline(s) if e.required}
    missing = sorted(set(wanted) - set(written))
    for f in unlisted:
        print(f"tiny: warning: {f} is not a manifest dest (the tiny profile must mirror the real layout)")
    profile = {
        "profile": "tiny",
        "pipelines": slugs,
        "hooks": ran,
        "skipped_hooks": skipped,
        "seconds": seconds,
        "files": len(written),
        "missing_required": [f"{wanted[d].id} ({d})" for d in missing],
        "unlisted": unlisted,
    }
    (dest / PROFILE_FILE).write_text(json.dumps(profile, indent=1))
    return profile


def _prepare(dest: Path) -> None:
    """An empty ``dest``: a previous tiny profile is replaced, anything else is left alone."""
    if dest.exists() and any(dest.iterdir()):
        if not (dest / PROFILE_FILE).exists():
            raise FileExistsError(f"{dest} is not empty and holds no {PROFILE_FILE}: not overwriting it")
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="make_tiny_weights.py",
        description="Write small random checkpoints in the official formats under weights/tiny/.",
    )
    p.add_argument("pipelines", nargs="*", metavar="PIPELINE", help=f"any of {', '.join(registry.PIPELINES)} (default: all)")
    p.add_argument("--dest", type=Path, default=TINY_DIR, help="output folder (default: weights/tiny)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    profile = write_tiny_profile(args.dest, args.pipelines or None)
    print(
        f"tiny profile: {profile['files']} files in {args.dest} ({time.perf_counter() - start:.1f} s); "
        f"hooks run: {len(profile['hooks'])}, skipped: {len(profile['skipped_hooks'])}"
    )
    if profile["missing_required"]:
        print(f"tiny: {len(profile['missing_required'])} required files not written yet "
              f"(no hook writes them; listed in {args.dest / PROFILE_FILE})")
    return 0
