"""Request limits of the services: battle ids, runs per battle, battles in flight per identity, page
tokens and page sizes in bytes.

A malformed value (a battle id with '/', a page token that is not a plain number) is InvalidArgument;
a request beyond a quota is ResourceExhausted whose message starts with `LIMIT_PREFIX` and names the
limit and the setting that raises it (`bobench.config.Settings`), so a client — and the scheduler's
gRPC executor, which retries a busy evaluator's RESOURCE_EXHAUSTED — can tell a limit from a
transient overload.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bobench.config import Settings
from bobench.errors import InvalidArgument, ResourceExhausted
from bobench.safe_parse import limit_hint
from bobench.status_codes import LIMIT_PREFIX

if TYPE_CHECKING:
    from bobench.battle.spec import BattleSpec

BATTLE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
ANONYMOUS = "anonymous"
IN_FLIGHT_STATES = ("queued", "running")


def caller_identity() -> str:
    """Who battles in flight are counted for: the authenticated caller (`bobench.rpc.auth`), or
    "anonymous" on a server without auth (one shared quota)."""
    from bobench.rpc import auth

    return auth.caller_name() or ANONYMOUS


def limit_error(what: str, name: str, limits: Settings) -> ResourceExhausted:
    """ResourceExhausted for `what` beyond the limit setting `name`."""
    return ResourceExhausted(f"{LIMIT_PREFIX}{what}; the limit is {limit_hint(name, limits)}")


def check_battle_id(value: str, field: str = "battle_id") -> str:
    """`value` if it matches [A-Za-z0-9._-]{1,128} and is not '.' or '..'; InvalidArgument otherwise."""
    if not BATTLE_ID.fullmatch(value) or value in (".", ".."):
        raise InvalidArgument(
            f"{field}: must be 1 to 128 letters, digits, '.', '_' or '-' (no '/'), got {value[:40]!r}"
            + ("..." if len(value) > 40 else "")
        )
    return value


def count_runs(spec: BattleSpec) -> int:
    """How many runs `spec` plans, counted without loading any dataset (the planner's filters: per
    protocol dataset/backbone subsets, unseeded protocols once per dataset)."""
    from bobench.protocols import get_protocol

    total = 0
    for entry in spec.protocols:
        seeds = len(spec.seeds) if get_protocol(entry.name).seeded else 1
        backbones = len(entry.backbones) if entry.backbones is not None else len(spec.backbones)
        datasets = len(entry.datasets) if entry.datasets is not None else len(spec.datasets)
        total += backbones * datasets * seeds
    return total


def check_runs_per_battle(spec: BattleSpec, limits: Settings) -> int:
    """The run count of `spec`; ResourceExhausted beyond `max_runs_per_battle`."""
    runs = count_runs(spec)
    if runs > limits.max_runs_per_battle:
        raise limit_error(f"the battle plans {runs} runs", "max_runs_per_battle", limits)
    return runs


def check_page_token(token: str) -> int:
    """The offset in a ListBattles page token: ASCII digits only ('²' or '١' are not tokens)."""
    if token and not (token.isascii() and token.isdigit() and len(token) <= 18):
        raise InvalidArgument(f"page_token: {token[:40]!r} is not a token this server issued")
    return int(token or "0")


class BattleQuota:
    """Battles in flight (queued or running) per identity, at most `max_battles_in_flight` each.

    Battles are attributed to the identity that submitted them (through this process, or `adopt`ed
    from the store after a restart); `state_of(id)`
    reads a battle's current state (None once it is gone). A reservation counts while its
    submission runs, so concurrent submissions cannot overshoot.
    """

    def __init__(self, limits: Settings, state_of: Callable[[str], str | None]) -> None:
        self.limits = limits
        self._state_of = state_of
        self._lock = threading.Lock()
        self._owned: dict[str, set[str]] = {}  # identity -> battle ids submitted
        self._reserved: dict[str, int] = {}

    def adopt(self, battles: Iterable[tuple[str, str]]) -> None:
        """Attribute existing battles, (owner, battle id) pairs, to their owners: the battles a
        restarted scheduler resumed count against the limit like those submitted since (owner "" =
        submitted without auth, counted as ANONYMOUS)."""
        with self._lock:
            for owner, battle_id in battles:
                self._owned.setdefault(owner or ANONYMOUS, set()).add(battle_id)

    def in_flight(self, identity: str) -> int:
        with self._lock:
            ids = list(self._owned.get(identity, ()))
        live = {bid for bid in ids if self._state_of(bid) in IN_FLIGHT_STATES}
        with self._lock:
            self._owned[identity] = live | (self._owned.get(identity, set()) - set(ids))
            return len(live) + self._reserved.get(identity, 0)

    @contextmanager
    def reserve(self, identity: str) -> Iterator[Callable[[str], None]]:
        """Hold a slot for one submission; call the yielded function with the battle id it got.
        ResourceExhausted (naming the limit) when `identity` has no slot left."""
        self.in_flight(identity)  # forget battles that ended
        with self._lock:
            held = len(self._owned.get(identity, ())) + self._reserved.get(identity, 0)
            if held >= self.limits.max_battles_in_flight:
                raise limit_error(
                    f"identity {identity[:60]!r} has {held} battles queued or running",
                    "max_battles_in_flight",
                    self.limits,
                )
            self._reserved[identity] = self._reserved.get(identity, 0) + 1

        def bind(battle_id: str) -> None:
            with self._lock:
                self._owned.setdefault(identity, set()).add(battle_id)

        try:
            yield bind
        finally:
            with self._lock:
                self._reserved[identity] -= 1


def page_by_bytes(items: list, size_of: Callable[[object], int], max_bytes: int) -> int:
    """How many leading `items` fit in `max_bytes` (at least one, so paging always advances)."""
    total = 0
    for n, item in enumerate(items):
        total += size_of(item)
        if total > max_bytes and n > 0:
            return n
    return len(items)
