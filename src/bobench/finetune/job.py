"""The fine-tuning job entrypoint: `finetune` plus the files a supervisor (Kubernetes, a scheduler)
reads from the output directory.

    OUT/status        one line: "running", "finished" or "failed" (replaced atomically)
    OUT/job.json      what runs: backbone, dataset ref, seed, resolved config, resume flag
    OUT/metrics.json  on success: the metrics, the same run description and the environment
    OUT/error.txt     on failure: the error message
    OUT/last.pt, OUT/best.pt   checkpoints (see bobench.finetune.loop)

A restarted job resumes from OUT/last.pt. (The scheduler's Kubernetes Jobs use `bob job run`,
`bobench.battle.executors.job_entry`, which keeps these checkpoints in the artifact store so that a pod retried
on another node resumes too.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bobench.finetune.checkpoint import write_json_atomic, write_text_atomic
from bobench.finetune.config import FinetuneConfig
from bobench.finetune.loop import ProgressFn, finetune

log = logging.getLogger(__name__)

STATUS_FILE = "status"
JOB_FILE = "job.json"
METRICS_FILE = "metrics.json"
ERROR_FILE = "error.txt"
STATUS_RUNNING, STATUS_FINISHED, STATUS_FAILED = "running", "finished", "failed"


def read_status(out_dir: str | Path) -> str | None:
    """The job's status word, or None when the job never started in `out_dir`."""
    path = Path(out_dir) / STATUS_FILE
    return path.read_text().strip() if path.exists() else None


def run_job(
    backbone: str,
    dataset_ref: str | dict,
    out_dir: str | Path,
    config: FinetuneConfig,
    seed: int = 0,
    *,
    resume: bool = True,
    cache_dir: str | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run `finetune` with status bookkeeping in `out_dir`; returns the metrics.

    Any exception (including KeyboardInterrupt) marks the job failed, writes error.txt and is re-raised,
    so the process exits non-zero.
    """
    from bobench.environment import environment

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    description = {
        "backbone": backbone,
        "dataset": dataset_ref,
        "seed": seed,
        "config": config.to_dict(),
        "resume": resume,
    }
    (out / ERROR_FILE).unlink(missing_ok=True)
    write_json_atomic(out / JOB_FILE, description)
    write_text_atomic(out / STATUS_FILE, STATUS_RUNNING + "\n")
    try:
        metrics = finetune(
            backbone, dataset_ref, out, config, seed, progress, resume=resume, cache_dir=cache_dir
        )
    except BaseException as exc:
        write_text_atomic(out / ERROR_FILE, f"{type(exc).__name__}: {exc}\n")
        write_text_atomic(out / STATUS_FILE, STATUS_FAILED + "\n")
        log.error("fine-tuning job in %s failed: %s: %s", out, type(exc).__name__, exc)
        raise
    write_json_atomic(
        out / METRICS_FILE,
        {
            **description,
            "metrics": metrics,
            "environment": environment(
                {"device": metrics["device"], "precision": metrics["precision"], "runtime": "torch"}
            ),
        },
    )
    write_text_atomic(out / STATUS_FILE, STATUS_FINISHED + "\n")
    return metrics
