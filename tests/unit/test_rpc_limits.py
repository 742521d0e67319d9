"""Request limits of the services (bobench.rpc.limits): battle ids, page tokens, battles in flight per
identity, pages bounded by bytes; quota errors carry the limit prefix and name their setting."""

from __future__ import annotations

import pytest

from bobench.config import Settings
from bobench.errors import InvalidArgument, ResourceExhausted
from bobench.rpc.limits import (
    LIMIT_PREFIX,
    BattleQuota,
    caller_identity,
    check_battle_id,
    check_page_token,
    check_runs_per_battle,
    page_by_bytes,
)
from bobench.status_codes import is_limit_message


@pytest.mark.parametrize("good", ["a", "sched-e2e-0123456789", "A.b_c-9", "x" * 128])
def test_battle_ids_of_safe_characters_pass(good):
    assert check_battle_id(good) == good


@pytest.mark.parametrize("bad", ["a/b", "../x", "..", ".", "x" * 129, "caf\u00e9", "a b", "a\x00"])
def test_battle_ids_with_a_slash_or_other_characters_are_invalid(bad):
    with pytest.raises(InvalidArgument, match="battle_id: must be 1 to 128 letters"):
        check_battle_id(bad)


@pytest.mark.parametrize(("token", "offset"), [("", 0), ("0", 0), ("50", 50)])
def test_page_tokens_are_ascii_digits(token, offset):
    assert check_page_token(token) == offset


@pytest.mark.parametrize("bad", ["\u00b2", "\u0661", "-1", "1.0", " 1", "9" * 19])
def test_a_page_token_that_is_not_plain_ascii_digits_is_invalid(bad):
    assert bad != "\u00b2" or bad.isdigit()  # str.isdigit() alone would let it through
    with pytest.raises(InvalidArgument, match="page_token"):
        check_page_token(bad)


def test_runs_per_battle_beyond_the_limit_is_resource_exhausted_naming_the_setting():
    from bobench.battle.spec import parse_spec

    spec = parse_spec({"name": "b", "backbones": ["toy"], "datasets": ["toy"], "protocols": ["knn"],
                       "seeds": [0, 1]})  # fmt: skip
    assert check_runs_per_battle(spec, Settings(max_runs_per_battle=1)) == 1  # knn runs once per dataset
    spec = parse_spec({**spec.to_dict(), "protocols": ["knn", "fewshot"]})
    with pytest.raises(ResourceExhausted) as info:
        check_runs_per_battle(spec, Settings(max_runs_per_battle=2))
    assert is_limit_message(str(info.value))
    assert "3 runs" in str(
        info.value
    ) and "max_runs_per_battle=2 (setting BOBENCH_MAX_RUNS_PER_BATTLE)" in str(info.value)


def test_battles_in_flight_are_counted_per_identity_and_released_when_they_end():
    states = {}
    quota = BattleQuota(Settings(max_battles_in_flight=2), states.get)
    for bid in ("b1", "b2"):
        with quota.reserve("alice") as bind:
            bind(bid)
            states[bid] = "queued"
    with pytest.raises(ResourceExhausted, match=f"^{LIMIT_PREFIX}.*max_battles_in_flight=2"):
        with quota.reserve("alice"):
            pass
    with quota.reserve("bob") as bind:  # another identity has its own quota
        bind("b3")
    states["b1"] = "finished"
    with quota.reserve("alice") as bind:
        bind("b4")


def test_a_failed_submission_gives_its_reservation_back():
    quota = BattleQuota(Settings(max_battles_in_flight=1), lambda _bid: None)
    with pytest.raises(InvalidArgument):
        with quota.reserve("alice"):
            raise InvalidArgument("bad spec")
    with quota.reserve("alice"):
        pass


def test_pages_by_bytes_keep_at_least_one_item():
    assert page_by_bytes([5, 5, 5], int, 10) == 2
    assert page_by_bytes([50, 5], int, 10) == 1
    assert page_by_bytes([], int, 10) == 0
    assert page_by_bytes([1, 2], int, 10) == 2


def test_battles_resumed_after_a_restart_count_against_their_owners():
    states = {"old-1": "running", "old-2": "finished", "anon": "queued"}
    quota = BattleQuota(Settings(max_battles_in_flight=1), states.get)
    quota.adopt([("alice", "old-1"), ("alice", "old-2"), ("", "anon")])
    with pytest.raises(ResourceExhausted, match="identity 'alice' has 1 battles"):
        with quota.reserve("alice"):
            pass
    with pytest.raises(ResourceExhausted, match="identity 'anonymous'"):
        with quota.reserve(caller_identity()):  # without auth: the shared anonymous quota
            pass
    states["old-1"] = "cancelled"
    with quota.reserve("alice") as bind:
        bind("new")
