"""The project's one fingerprint function: cache keys, protocol/dataset/algorithm fingerprints and
job identities are all :func:`digest` of a JSON-normalisable payload."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(payload: Any, length: int = 12) -> str:
    """A short stable hash of ``payload`` as sorted JSON (non-JSON values by ``str``)."""
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
