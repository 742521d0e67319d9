"""Test doubles that live in the real registries (STYLE.md), shared by the service and integration tiers."""

from __future__ import annotations

import time


def register_sleepy_protocol() -> str:
    """A protocol that reports progress every `step_s` for `steps` steps (deadline and cancellation
    tests); registered once per process. Returns its name."""
    from bobench.protocols.base import PROTOCOLS, Protocol, register_protocol

    name = "test_sleepy"
    if name not in PROTOCOLS:

        def evaluate(ctx, config, seed):
            for i in range(config["steps"]):
                ctx.progress(i + 1, config["steps"], "sleeping")
                time.sleep(config["step_s"])
            return {"steps_done": float(config["steps"])}

        register_protocol(
            Protocol(
                name=name,
                version="1",
                task="classification",
                evaluate=evaluate,
                defaults={"steps": 100, "step_s": 0.02},
                primary_metric="steps_done",
                higher_is_better={"steps_done": True},
                needs_features=False,
            )
        )
    return name


def gated_local_store():
    """A real LocalStore class whose every call first passes `self._gate(write)`: subclasses make the
    gate refuse (a store that is down) or wait (a store that hangs). Imported lazily: bobench.store."""
    from bobench.store import LocalStore

    class GatedLocalStore(LocalStore):
        def _gate(self, write: bool = False) -> None:
            pass

        def put_bytes(self, key, data, content_type="application/octet-stream"):
            self._gate(write=True)
            return super().put_bytes(key, data, content_type)

        def get_bytes(self, key):
            self._gate()
            return super().get_bytes(key)

        def stat(self, key):
            self._gate()
            return super().stat(key)

        def list(self, prefix=""):
            self._gate()
            return super().list(prefix)

    return GatedLocalStore
