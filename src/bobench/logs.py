"""The one logging setup of every front end (`bob`, the services, the stack, the Job entrypoints).

One line format everywhere, so a log read from a pod, a stack log file or a terminal looks the same:
`2026-01-31 12:00:00,123 INFO    bobench.battle.scheduler: message`.
"""

from __future__ import annotations

import logging
from typing import TextIO

from bobench.errors import InvalidArgument

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Libraries that log at INFO/DEBUG what a user need not see; shown again at DEBUG level (`bob -vv`).
NOISY_LOGGERS = (
    "matplotlib",
    "PIL",
    "urllib3",
    "torch.onnx",
    "onnxscript",
    "filelock",
    "faiss",
    "faiss.loader",
)


def setup_logging(
    level: int | str = logging.INFO, stream: TextIO | None = None, *, quiet_libraries: bool | None = None
) -> None:
    """Configure the root logger (its first handler stays, as with `logging.basicConfig`; the level is
    set every time, since basicConfig keeps an earlier one: tests, an embedding host). `level` is a
    number or a name ("INFO", "debug"; another name is InvalidArgument). The NOISY_LOGGERS stay at
    WARNING or above unless `quiet_libraries` is False (default: quiet above DEBUG)."""
    if isinstance(level, str):
        name = level.strip().upper()
        level = logging.getLevelName(name)
        if not isinstance(level, int):
            raise InvalidArgument(f"log level: unknown level {name!r}")
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=stream)
    logging.getLogger().setLevel(level)
    if quiet_libraries if quiet_libraries is not None else level > logging.DEBUG:
        for noisy in NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
