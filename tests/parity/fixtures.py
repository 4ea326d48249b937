"""Finding parity fixtures and comparing against them (tolerances: shared/parity/README.md §7).

Fixtures are read where they lie: ``../shared/parity`` beside the checkout (or
``$FACEFOUNDRY_SHARED/parity``), plus ``$PARITY_FIXTURES_DIR`` when it is set. Every
``*.seed<N>.npz`` found is a test case; nothing is special-cased.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.common.checkpoint import to_tensors

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FACEFOUNDRY_SHARED", REPO.parent / "shared"))
PARITY = SHARED / "parity"
SEED_RE = re.compile(r"(.+)\.seed(\d+)\.npz$")


def configured_roots() -> list[Path]:
    roots = [PARITY]
    extra = os.environ.get("PARITY_FIXTURES_DIR")
    if extra:
        roots.append(Path(extra))
    return roots


def fixture_roots() -> list[Path]:
    return [r for r in configured_roots() if r.is_dir()]


def fixtures_required() -> bool:
    """Under CI (or FACEFOUNDRY_REQUIRE_FIXTURES=1) missing fixtures fail the test: a skip would let
    a parity check pass without comparing anything (issue 9)."""
    return (os.environ.get("CI", "").lower() in ("1", "true", "yes")
            or os.environ.get("FACEFOUNDRY_REQUIRE_FIXTURES") == "1")


def missing_fixtures(reason: str) -> None:
    """Fail (CI) or skip (a local run without shared/) a test whose fixture files are missing."""
    if fixtures_required():
        pytest.fail(f"{reason}: parity fixtures are required (CI=true or FACEFOUNDRY_REQUIRE_FIXTURES=1)",
                    pytrace=False)
    pytest.skip(f"{reason} (a local run may skip; CI=true or FACEFOUNDRY_REQUIRE_FIXTURES=1 makes it fail)")


def absent(reason: str):
    """A pytest parameter standing for fixtures that are not there; tests/conftest.py turns its
    mark into ``missing_fixtures(reason)`` before the test body runs."""
    return pytest.param(None, id="missing-fixtures", marks=pytest.mark.missing_fixtures(reason=reason))


def discover(subdir: str, module: str) -> list[Path]:
    """Every ``<subdir>/<module>.seed<N>.npz`` in every fixture root."""
    found = []
    for root in fixture_roots():
        for path in sorted((root / subdir).glob(f"{module}.seed*.npz")):
            m = SEED_RE.match(path.name)
            if m and m.group(1) == module:
                found.append(path)
    return found


def params(subdir: str, module: str):
    """pytest parameters over the fixtures of one module (ids: root name + file name)."""
    paths = discover(subdir, module)
    found = [pytest.param(p, id=f"{p.parent.parent.name}/{p.name}") for p in paths]
    lost = [str(r) for r in configured_roots() if not r.is_dir()]
    if lost:
        return found + [absent(f"fixture root(s) {', '.join(lost)} do not exist")]
    if not paths:
        return [absent(f"no {subdir}/{module}.seed*.npz under {', '.join(map(str, configured_roots()))}")]
    return found


def seed_of(path: Path) -> int:
    return int(SEED_RE.match(path.name).group(2))


def load_npz(path: Path) -> dict[str, np.ndarray]:
    data = dict(np.load(path))
    assert int(data["meta_seed"]) == seed_of(path), "meta_seed disagrees with the file name"
    assert str(data["meta_rule"]) == "v2", "fixture built with another weight rule"
    return data


def sidecar(path: Path, module: str, suffix: str, folder: Path | None = None) -> dict:
    """``<module>.<suffix>`` in ``folder`` (default: beside the fixture), else in the shared folder
    of the same name: a second fixture root may ship only its ``*.npz`` files."""
    folder = path.parent if folder is None else folder
    candidates = [folder / f"{module}.{suffix}", PARITY / folder.name / f"{module}.{suffix}"]
    for c in candidates:
        if c.exists():
            return json.loads(c.read_text())
    raise FileNotFoundError(candidates[0])


def detweights():
    """The shared weight rule, imported from where it lies (never copied into the project)."""
    spec = importlib.util.spec_from_file_location("detweights", PARITY / "detweights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def state_dict_for(path: Path, module: str, folder: Path | None = None) -> dict[str, np.ndarray]:
    """Deterministic weights of ``module`` with the seed of the fixture at ``path``; its manifest
    lies in ``folder`` as for ``sidecar`` (default: beside the fixture)."""
    return detweights().state_dict_for(sidecar(path, module, "manifest.json", folder), seed_of(path))


def torch_state_dict_for(path: Path, module: str, folder: Path | None = None) -> dict[str, torch.Tensor]:
    """``state_dict_for`` as tensors, ready to be written as an official checkpoint; 0-d entries
    (BatchNorm's ``num_batches_tracked``) stay 0-d, as in the official files."""
    return to_tensors(state_dict_for(path, module, folder))


def default_tolerance(ref: np.ndarray) -> tuple[float, float]:
    ref = np.asarray(ref, dtype=np.float64)
    return 1e-4 * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0), 1e-4


def timed(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` and the seconds it took (the forward times ``report`` prints)."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def report(name: str, got, ref, seconds: float | None = None, atol: float | None = None, note: str = "") -> None:
    """Print the max error against ``ref`` beside its tolerance (default: README §7's atol), and
    the forward time: the numbers a parity run quotes, shown with ``pytest -s``."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    atol = default_tolerance(ref)[0] if atol is None else atol
    timing = "" if seconds is None else f", forward {seconds:.2f} s"
    print(f"\n{name}: max err {np.abs(got - ref).max():.3g} (atol {atol:.3g}{note}){timing}")


def assert_close(got, ref, name: str = "", atol: float | None = None, rtol: float | None = None):
    """The default check: ``|got - ref| <= atol + rtol |ref|`` with atol scaled by max |ref|."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    d_atol, d_rtol = default_tolerance(ref)
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    err = np.abs(got - ref)
    bad = err > atol + rtol * np.abs(ref)
    assert not bad.any(), (
        f"{name}: {int(bad.sum())}/{bad.size} out of tolerance, max err {err.max():.3g} "
        f"(atol {atol:.3g}, rtol {rtol:.3g})"
    )


def assert_close_f16(got, ref_f16, name: str = ""):
    """Outputs stored rounded to float16: ``|got - f16| <= 1e-3 max(|f16|, 1e-2) + 1e-4``."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref_f16, dtype=np.float64)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    err = np.abs(got - ref)
    bad = err > 1e-3 * np.maximum(np.abs(ref), 1e-2) + 1e-4
    assert not bad.any(), f"{name}: {int(bad.sum())}/{bad.size} out of tolerance, max err {err.max():.3g}"


def assert_output(got, fixture: dict, key: str):
    """Compare output ``key`` whichever way the fixture stores it (full, f16 + exact subset, stats)."""
    got = np.asarray(got, dtype=np.float64)
    stored = [k for k in (key, f"{key}_f16", f"{key}_stats") if k in fixture]
    assert stored, f"{key}: the fixture stores no form of it (full, _f16 or _stats): nothing was compared"
    if key in fixture:
        assert_close(got, fixture[key], key)
    if f"{key}_f16" in fixture:
        assert_close_f16(got, fixture[f"{key}_f16"], f"{key}_f16")
        flat = got.reshape(-1)[fixture[f"{key}_sub_idx"]]
        assert_close(flat, fixture[f"{key}_sub"], f"{key}_sub")
    if f"{key}_stats" in fixture:
        stats = fixture[f"{key}_stats"]
        mine = np.array([got.mean(), got.std(), got.min(), got.max(), np.abs(got).mean()])
        atol, rtol = default_tolerance(got)
        assert_close(mine, stats[:5], f"{key}_stats", atol=atol, rtol=rtol)


def assert_u8_close(got, ref, name: str = "", max_fraction: float = 0.01):
    """uint8 images: at most one level anywhere and at most 1 % of values different."""
    got = np.asarray(got).astype(np.int16)
    ref = np.asarray(ref).astype(np.int16)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    diff = np.abs(got - ref)
    assert diff.max() <= 1, f"{name}: max difference {diff.max()} levels"
    assert (diff > 0).mean() <= max_fraction, f"{name}: {(diff > 0).mean():.2%} of values differ"


# OpenCV's fixed-point warps, resizes and blurs take different SIMD paths on different x86 CPUs
# (AVX2 vs AVX-512): "exact" holds only on the machine that made the fixtures. The cross-CPU
# rule of insightface_glue/README.md §6: one level anywhere, in at most 0.5 % of values.
OPENCV_FRACTION = 0.005


def assert_opencv_u8(got, ref, name: str = ""):
    """An OpenCV-computed uint8 array under the cross-CPU rule (README §6)."""
    assert_u8_close(got, ref, name, max_fraction=OPENCV_FRACTION)


def assert_close_from_opencv_u8(got, ref, level: float, name: str = ""):
    """A float array computed from an OpenCV uint8 array (README §6): the default tolerance, except
    in at most 0.5 % of values, which may be off by what one level of the input becomes (``level``,
    e.g. 1/127.5 for an ArcFace blob)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    atol, rtol = default_tolerance(ref)
    err = np.abs(got - ref)
    bound = atol + rtol * np.abs(ref)
    assert (err <= bound + level).all(), f"{name}: max err {err.max():.3g} exceeds one level ({level:.3g})"
    off = (err > bound).mean()
    assert off <= OPENCV_FRACTION, f"{name}: {off:.2%} of values are off by a level"


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], name: str = ""):
    """Two loads of one checkpoint: copied tensors are equal bit for bit; folded ones (spectral
    norm, pipelines/common/checkpoint.py) are the float64 fold rounded once, so they agree to one
    float32 ulp whatever the CPU's summation order (rtol = float32 eps, no atol)."""
    assert a.keys() == b.keys(), f"{name}: keys differ"
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=torch.finfo(torch.float32).eps, atol=0,
                                   msg=lambda m, key=key: f"{name} {key}: {m}")
