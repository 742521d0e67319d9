"""The data context: store settings for s3:// dataset refs, set once at the process edge.

Library functions never read environment variables; a process that may load s3:// datasets (the
CLI, the evaluator service, the scheduler, a Job entrypoint) calls `configure(settings)` once at
start-up with the `Settings` it resolved. Local and bundled datasets need no context; the same call
sets where client-supplied local paths may point (`bobench.data.roots`: `data_roots`, and stricter
defaults for services).
"""

from __future__ import annotations

import threading

import bobench.data.roots as roots
from bobench.config import Settings
from bobench.errors import FailedPrecondition

_lock = threading.Lock()
_settings: Settings | None = None


def configure(settings: Settings, *, service: bool = False) -> None:
    """Use `settings` (s3_endpoint, s3_access_key, s3_secret_key, s3_secure, cache_dir) for s3:// datasets,
    and its data_roots / allow_torchhub for client paths; `service` (the evaluator, the scheduler)
    restricts paths to the cache without data_roots (`bobench.data.roots`)."""
    global _settings
    if not isinstance(settings, Settings):
        raise TypeError(f"configure() takes a bobench.config.Settings, got {type(settings).__name__}")
    policy = roots.policy_for(
        settings.data_roots, settings.cache_dir, service=service, allow_torchhub=settings.allow_torchhub
    )
    with _lock:
        _settings = settings
    roots.set_policy(policy)


def data_settings(where: str) -> Settings:
    """The configured settings; FailedPrecondition naming `where` when `configure` was never called."""
    with _lock:
        settings = _settings
    if settings is None:
        raise FailedPrecondition(
            f"{where}: s3:// datasets need the store settings, but this process never called "
            "bobench.data.configure(settings)"
        )
    return settings


def reset() -> None:
    """Forget the configured settings and path policy (tests)."""
    global _settings
    with _lock:
        _settings = None
    roots.reset()
