"""The one owner of the project's digests: a canonical JSON document's, and a file's bytes.

Every identity (run key, backbone digest, feature-cache key, checkpoint folder, publish key, content
key) is `json_digest(doc, length)`: sha256 over the document as sorted-key JSON, as hex, cut to a
length named here. The lengths differ on purpose and are storage contracts: a run key is stored in
every `results.jsonl` line and the scheduler's state, a feature key names cache files, a publish key
names a Kubernetes Job. Changing a length (or the JSON rendering) changes every stored key of that
kind, so a stored result would no longer be found and would be computed again: don't, or say so.

File contents (weights, exported models, dataset files) are hashed by `sha256_file`, streamed in
1 MiB chunks; the full 64 hex digits, as `sha256sum` prints them.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

FULL_HEX = 64  # content keys (model repository paths), weight digests: never cut
RUN_KEY_HEX = 24  # run keys: results.jsonl, scheduler state, Job labels
BACKBONE_DIGEST_HEX = 16  # BackboneSpec.digest(): export/facts file names, feature and Job keys
FEATURE_KEY_HEX = 32  # feature-cache entry file names
CHECKPOINT_DIR_HEX = 20  # fine-tune and detection checkpoint folders under the cache dir
PUBLISH_JOB_KEY_HEX = 20  # `bobench-publish-<key>`: a Kubernetes name and label value (<= 63 chars)
CONFIG_DIGEST_HEX = 8  # "cfg <digest>" in report labels: for reading, not for storage

_CHUNK_BYTES = 1 << 20


def canonical_json(doc: Any) -> bytes:
    """`doc` as sorted-key JSON (values JSON cannot hold are rendered with str()): the bytes hashed."""
    return json.dumps(doc, sort_keys=True, default=str).encode()


def json_digest(doc: Any, length: int = FULL_HEX) -> str:
    """Hex sha256 of `canonical_json(doc)`, its first `length` digits (one of the *_HEX above)."""
    if not 1 <= length <= FULL_HEX:
        raise ValueError(f"digest length must be 1..{FULL_HEX}, got {length}")
    return hashlib.sha256(canonical_json(doc)).hexdigest()[:length]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks. OSError propagates (callers name the file)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()
