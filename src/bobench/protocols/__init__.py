"""Evaluation protocols, one module each, registered by name in PROTOCOLS.

Importing this package imports no protocol module: the built-ins' metadata (`builtin.py`) loads on
the first lookup, and a protocol's module (torch and friends) when its `evaluate` is first called.
"""

from __future__ import annotations

from bobench.protocols.base import PROTOCOLS, Protocol, RunContext, get_protocol, register_protocol

__all__ = ["PROTOCOLS", "Protocol", "RunContext", "get_protocol", "register_protocol"]
