"""Request bodies: JSON parsed only after its nesting depth is known to be small.

Python's ``json`` recurses once per nesting level, so a 50k-deep object raises RecursionError
deep inside the parser (a 500, issue 13). The depth is therefore measured first, on the raw
bytes and without recursion, and a body nested deeper than the limit is a 400.
"""
from __future__ import annotations

import json
import re

import numpy as np

from server.errors import ApiError

# One JSON string literal, escapes included (RFC 8259 §7), written so the engine never backtracks.
STRING_LITERAL = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
OPENERS = (ord("["), ord("{"))
CLOSERS = (ord("]"), ord("}"))


def json_nesting_depth(body: bytes) -> int:
    """The deepest bracket nesting of ``body`` once string literals are removed.

    For valid JSON this is exactly the parser's recursion depth; for invalid JSON it is at
    least the depth the parser reaches before it fails, because up to the first error both
    agree on where every string starts and ends.
    """
    structure = np.frombuffer(STRING_LITERAL.sub(b"", body), dtype=np.uint8)
    steps = np.zeros(structure.shape, dtype=np.int64)
    steps[np.isin(structure, OPENERS)] = 1
    steps[np.isin(structure, CLOSERS)] = -1
    return int(np.cumsum(steps).max()) if steps.size else 0


def exceeds_depth(body: bytes, max_depth: int) -> bool:
    # A body with no more brackets than the limit cannot nest deeper: the common case (a flat
    # object around large base64 strings) skips the scan.
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    return json_nesting_depth(body) > max_depth


def parse_json_object(body: bytes, max_depth: int) -> dict:
    """The request body as a dict, or a 400 that says what is wrong with it."""
    if exceeds_depth(body, max_depth):
        raise ApiError(400, f"the request body is nested more than {max_depth} levels deep")
    try:
        data = json.loads(body)
    except RecursionError:
        raise ApiError(400, f"the request body is nested more than {max_depth} levels deep") from None
    except ValueError:  # also UnicodeDecodeError and the int digit limit (sys.set_int_max_str_digits)
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data
