r"""The one table of process exit codes, shared by every front end.

`bob`, the services (`python -m bobench.rpc.evaluator_service`, `...scheduler_service`,
`...serving.embedder_service`), the local stack, the MinIO setup Job and the Kubernetes Job entry
(`bob job run`) all exit with these codes, so a script, `make` or a Kubernetes `podFailurePolicy`
can tell "fix your input" from "try again":

| code | name          | meaning                                                                    |
|------|---------------|----------------------------------------------------------------------------|
| 0    | OK            | done                                                                       |
| 1    | FAILED        | it ran, and a run failed (or an unexpected error): the record says why     |
| 2    | USAGE_ERROR   | a bad flag, argument, spec or setting: retrying cannot help (a Job fails)  |
| 3    | UNAVAILABLE   | a service, store or dependency did not answer in time: retrying may help   |
| 130  | INTERRUPTED   | stopped by Ctrl-C (SIGINT)                                                 |
| 141  | BROKEN_PIPE   | `bob` only: the reader of its output left early (`bob ... \| head`), quietly |

The same numbers as the repository scripts (`scripts/audit_lock.py`, `scripts/pin_base_images.py`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from bobench.errors import BobenchError, DeadlineExceeded, Unavailable

OK = 0
FAILED = 1
USAGE_ERROR = 2
UNAVAILABLE = 3
INTERRUPTED = 130
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`

TRANSIENT_ERRORS: tuple[type[BobenchError], ...] = (Unavailable, DeadlineExceeded)


def exit_code_for(exc: BaseException) -> int:
    """The exit code of a front end that stops on `exc`.

    Unavailable / DeadlineExceeded: UNAVAILABLE; any other BobenchError (invalid argument, not found,
    permission denied, ...): USAGE_ERROR; KeyboardInterrupt: INTERRUPTED; anything else (a bug): FAILED.
    """
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, TRANSIENT_ERRORS):
        return UNAVAILABLE
    if isinstance(exc, BobenchError):
        return USAGE_ERROR
    return FAILED


def report_exit(exc: BaseException, prog: str, stream: TextIO | None = None) -> int:
    """Print one line for `exc` ("<prog>: error: ..." or "<prog>: interrupted") and return its code."""
    stream = stream or sys.stderr
    if isinstance(exc, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=stream)
    else:
        print(f"{prog}: error: {exc}", file=stream)
    return exit_code_for(exc)


def run_main(main: Callable[[], int | None], prog: str) -> int:
    """Call a front end's `main()`; a BobenchError or Ctrl-C becomes one line on stderr and its code
    (instead of a traceback). Any other exception propagates: a bug keeps its traceback (exit 1)."""
    try:
        return int(main() or OK)
    except (BobenchError, KeyboardInterrupt) as exc:
        return report_exit(exc, prog)
