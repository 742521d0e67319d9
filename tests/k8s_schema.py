"""Validation the stand-in Kubernetes API server applies to every object it receives: the strict
Kubernetes OpenAPI schema (`kubernetes_validate`, 1.32) and the `kubernetes` client models (a round
trip through the model class: keys that vanish are unknown or misspelled fields)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

K8S_VERSION = "1.32"


def schema_problems(obj: dict[str, Any], model: str | None) -> list[str]:
    """Strict OpenAPI schema errors of `obj`, plus fields the client model `model` does not know."""
    import kubernetes_validate
    from kubernetes import client

    problems = []
    try:
        if obj.get("kind") == "DeleteOptions":
            _validate_file(obj, "deleteoptions-meta-v1.json")
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except Exception as exc:  # ValidationError and SchemaNotFoundError both mean "not acceptable"
        problems.append(f"schema: {getattr(exc, 'message', exc)}")
    if model is not None:
        api = client.ApiClient()
        back = api.sanitize_for_serialization(api._ApiClient__deserialize(obj, model))
        problems += [f"unknown field {path}" for path in _vanished(obj, back, "")]
    return problems


def _validate_file(obj: dict[str, Any], name: str) -> None:
    import jsonschema
    import kubernetes_validate

    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = folder / f"v{K8S_VERSION}.0-local-strict" / name
    schema = json.loads(path.read_text())
    resolver = jsonschema.RefResolver(base_uri=path.as_uri(), referrer=schema)
    jsonschema.validate(obj, schema, resolver=resolver)


def _vanished(sent: Any, back: Any, path: str) -> list[str]:
    if isinstance(sent, dict):
        if not isinstance(back, dict):
            return [path or "."]
        return [p for k, v in sent.items() for p in _vanished(v, back.get(k), f"{path}.{k}")] + [
            f"{path}.{k}" for k in sent if k not in back
        ]
    if isinstance(sent, list) and isinstance(back, list):
        return [
            p
            for i, (a, b) in enumerate(zip(sent, back, strict=False))
            for p in _vanished(a, b, f"{path}[{i}]")
        ]
    return []
