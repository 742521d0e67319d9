"""One digest helper, and identities that cover `BackboneSpec.extra`.

Issue 11: pooling, prompt and timm kwargs (`extra`) were left out of the run key and the feature-cache
key, so changing them reused stale results and features; five sha256 helpers cut at five lengths.
The expected values are computed here the way the old helpers did, so a spec without extras (and
every other key) is shown to keep the value stored results and caches were written under.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from bobench.backbones.spec import BackboneSpec
from bobench.battle.plan import run_key
from bobench.embed.cache import feature_key
from bobench.hashing import (
    BACKBONE_DIGEST_HEX,
    FULL_HEX,
    RUN_KEY_HEX,
    canonical_json,
    json_digest,
    sha256_file,
)

SPEC = BackboneSpec(
    name="tiny", source="timm", model_id="vit_tiny_patch16_224", family="vit",
    pretraining_method="supervised", pretraining_data="in1k",
)  # fmt: skip


def _old_digest(doc, length: int) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:length]


def test_json_digest_is_the_sha256_of_sorted_json_cut_to_the_named_length():
    doc = {"b": [1, 2], "a": {"z": None, "y": 1.5}}
    assert canonical_json(doc) == json.dumps(doc, sort_keys=True).encode()
    assert json_digest(doc) == hashlib.sha256(canonical_json(doc)).hexdigest()
    assert len(json_digest(doc)) == FULL_HEX
    assert json_digest(doc, RUN_KEY_HEX) == json_digest(doc)[:RUN_KEY_HEX]
    assert json_digest({"a": {"y": 1.5, "z": None}, "b": [1, 2]}) == json_digest(doc)  # key order
    with pytest.raises(ValueError):
        json_digest(doc, 0)


def test_sha256_file_is_what_sha256sum_prints(tmp_path):
    path = tmp_path / "w.bin"
    data = bytes(range(256)) * 5000  # over one 1 MiB chunk
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_a_spec_without_extras_keeps_its_digest_and_run_key():
    identity = SPEC.identity()
    assert "extra" not in identity
    assert SPEC.digest() == _old_digest(identity, 16)
    key = run_key(identity, "fp", "knn", "1", {"ks": [5]}, 0)
    doc = {"backbone": identity, "dataset": "fp", "protocol": "knn", "version": "1",
           "config": {"ks": [5]}, "seed": 0}  # fmt: skip
    assert key == _old_digest(doc, 24)


@pytest.mark.parametrize(
    "extra",
    [{"pool": "mean"}, {"prompt": "a photo"}, {"timm_kwargs": {"num_heads": 12}}],
)
def test_changing_extra_changes_the_backbone_digest_run_key_and_feature_key(extra):
    changed = SPEC.replace(extra=extra)
    assert changed.identity()["extra"] == extra
    assert changed.digest() != SPEC.digest()
    assert len(changed.digest()) == BACKBONE_DIGEST_HEX
    args = ("fp", "knn", "1", {"ks": [5]}, 0)
    assert run_key(changed.identity(), *args) != run_key(SPEC.identity(), *args)
    before = feature_key(SPEC.digest(), "fp", "train").hexdigest()
    assert feature_key(changed.digest(), "fp", "train").hexdigest() != before
    # the same extras, built again, give the same keys
    again = SPEC.replace(extra=json.loads(json.dumps(extra)))
    assert again.digest() == changed.digest()
    assert run_key(again.identity(), *args) == run_key(changed.identity(), *args)


def test_no_module_hashes_a_json_document_by_itself():
    """The canonical-JSON digests all go through bobench.hashing (file streaming too)."""
    from pathlib import Path

    import bobench

    root = Path(bobench.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "hashing.py" or "v1" in path.relative_to(root).parts:
            continue
        text = path.read_text()
        if "hashlib.sha256(json.dumps" in text or ("json.dumps(" in text and ".hexdigest()[:" in text):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []
