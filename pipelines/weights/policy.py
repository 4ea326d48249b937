"""Licence policy: a deployment loads non-commercial weights only when it says so.

Entries flagged ``commercial_use = false`` (InsightFace packs, inswapper, InstantID, RMBG-1.4, …)
make a pipeline refuse to load unless ``allow_noncommercial`` is set. ``"unknown"`` entries
(GFPGAN, the SadTalker bundle, …: specs ask for legal review) load, and are reported so the
operator sees them in ``/ready``.
"""
from __future__ import annotations

from typing import Iterable

from pipelines.base import LicenceRefused
from pipelines.weights.manifest import Entry


def check_licences(entries: Iterable[Entry], allow_noncommercial: bool) -> list[str]:
    """Raise LicenceRefused naming every non-commercial component unless allowed.

    Returns one notice per component whose commercial use is unknown (to be logged).
    """
    entries = list(entries)
    refused = [e for e in entries if e.non_commercial]
    if refused and not allow_noncommercial:
        names = "; ".join(f"{e.id} ({e.licence})" for e in refused)
        raise LicenceRefused(
            f"non-commercial component(s) required: {names}. "
            "Enable the allow_noncommercial setting only if your use is permitted by those licences."
        )
    return [f"{e.id}: commercial use unknown ({e.licence})" for e in entries if e.commercial_use == "unknown"]


def component_report(entries: Iterable[Entry]) -> list[dict]:
    """The ``/ready`` view of loaded components: id, installed file, licence, commercial_use."""
    return [
        {"id": e.id, "file": e.dest, "licence": e.licence, "commercial_use": e.commercial_use}
        for e in entries
    ]
