"""Request fingerprints, for Idempotency-Key: what two requests must share to be the same request.

"The same request" is the decoded body, canonicalised (object keys sorted, no
whitespace), as Stripe compares parameters: a client that re-serialises its JSON on a
retry is not refused. A body that is not JSON is compared byte for byte.
"""

from __future__ import annotations

import hashlib

import msgspec

_canonical = msgspec.json.Encoder(order="sorted").encode


def fingerprint(body: bytes) -> str:
    """What two requests must share to be the same request: the canonical JSON of the body (or its bytes)."""
    try:
        canonical = b"json\0" + _canonical(msgspec.json.decode(body))
    except (msgspec.DecodeError, RecursionError):
        canonical = b"raw\0" + body
    return hashlib.sha256(canonical).hexdigest()
