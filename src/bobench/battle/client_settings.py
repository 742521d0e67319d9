"""Which keys of a battle spec's `settings:` a client may set when it submits through the services.

A spec run locally (`bob battle run`) may set any of `bobench.battle.spec`'s settings: the user
configures their own process. Through the scheduler the spec comes from a client, and `cache_dir`,
`triton_url` and `device` are the operator's (where the service writes, which Triton it trusts,
which hardware it uses): a submitted spec naming them is refused with PermissionDenied naming the
key, never silently ignored. `batch_size` and `threads` only change how fast a run goes, so they
pass this check; the scheduler then refuses them too, with InvalidArgument, because its runs use
the evaluators' settings (`bobench.battle.scheduler.refuse_run_settings`).
"""

from __future__ import annotations

from typing import Any

from bobench.errors import PermissionDenied

CLIENT_SETTABLE = frozenset({"batch_size", "threads"})


def check_client_settings(settings: dict[str, Any], where: str = "spec.settings") -> None:
    """PermissionDenied naming every key of `settings` that only the service's operator may set."""
    refused = sorted(set(settings) - CLIENT_SETTABLE)
    if refused:
        raise PermissionDenied(
            f"{where}: {', '.join(refused)} {'is a' if len(refused) == 1 else 'are'} server-side "
            f"setting{'s' if len(refused) > 1 else ''}, set by the service's operator; a submitted spec "
            f"may set only {', '.join(sorted(CLIENT_SETTABLE))}"
        )
