"""HMAC-SHA256 signatures on the finished results the scheduler keeps in the artifact store.

A stored `results/<run_key>.json` counts as finished only when its signature verifies with the
scheduler's key (setting `result_signing_key`, env BOBENCH_RESULT_SIGNING_KEY): an object written
by anything that can reach the store but not the key (e.g. an upload through SeaweedFS's filer) is
ignored and its run executed again. The signature covers the canonical JSON of the record (sorted
keys, no whitespace) without the `signature` field, and is kept in that field:
`{"alg": "hmac-sha256", "value": "<hex>"}`.

Without a key the signer signs nothing and accepts every record (a store only the scheduler can
write to); the scheduler logs that once at start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

SIGNATURE_FIELD = "signature"
ALGORITHM = "hmac-sha256"


class ResultSigner:
    """Signs and verifies result documents with one secret key ("" = signing off)."""

    def __init__(self, key: str | bytes = "") -> None:
        self._key = key.encode() if isinstance(key, str) else bytes(key)

    @property
    def enabled(self) -> bool:
        return bool(self._key)

    def sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A copy of `doc` carrying its signature (unchanged when signing is off)."""
        body = {k: v for k, v in doc.items() if k != SIGNATURE_FIELD}
        if not self.enabled:
            return body
        return {**body, SIGNATURE_FIELD: {"alg": ALGORITHM, "value": self._mac(body)}}

    def verify(self, doc: Any) -> bool:
        """Whether `doc` is a result this key signed (always True when signing is off)."""
        if not self.enabled:
            return isinstance(doc, dict)
        if not isinstance(doc, dict):
            return False
        signature = doc.get(SIGNATURE_FIELD)
        if not isinstance(signature, dict) or signature.get("alg") != ALGORITHM:
            return False
        value = signature.get("value")
        if not isinstance(value, str):
            return False
        body = {k: v for k, v in doc.items() if k != SIGNATURE_FIELD}
        return hmac.compare_digest(value, self._mac(body))

    def _mac(self, body: dict[str, Any]) -> str:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
        return hmac.new(self._key, canonical.encode(), hashlib.sha256).hexdigest()
