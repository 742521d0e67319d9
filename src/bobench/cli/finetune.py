"""`bob finetune BACKBONE DATASET --out DIR`: fine-tune end to end by hand. Writes OUT/status,
OUT/metrics.json and checkpoints (bobench.finetune.job); exits non-zero when the job fails.
Precedence: flags > --recipe FILE > recipe defaults (--config is the settings file, as everywhere). The scheduler's Kubernetes Jobs run battle
fine-tune runs with `bob job run` instead (bobench.battle.executors.job_entry: checkpoints in the store)."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from bobench.cli.common import out_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a backbone + linear head end to end (resumable)")
    p.add_argument("backbone", help="registered backbone name")
    p.add_argument("dataset", help='dataset name, path, or a JSON dataset ref like \'{"name": "toy"}\'')
    p.add_argument(
        "-o", "--out", required=True, type=out_dir, help="run directory (checkpoints, status, metrics.json)"
    )
    p.add_argument(
        "--recipe",
        dest="finetune_config",
        metavar="FILE",
        help="fine-tune recipe (YAML/JSON; keys of FinetuneConfig); --config is the settings file",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate of the head")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="auto | cpu | cuda[:N]")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from OUT/last.pt when present (default: yes)",
    )
    p.add_argument("--cache-dir", help="backbone cache (env BOBENCH_CACHE_DIR)")
    p.set_defaults(func=cmd_finetune)


def _dataset_ref(text: str) -> str | dict:
    return json.loads(text) if text.lstrip().startswith("{") else text


def _raise_on_sigterm(signum: int, frame: object) -> None:
    from bobench.errors import Cancelled

    raise Cancelled("fine-tuning stopped by SIGTERM; rerun with --resume to continue")


def cmd_finetune(args: argparse.Namespace) -> int:
    from bobench.cli.common import settings_from
    from bobench.finetune.config import FinetuneConfig, load_config_file
    from bobench.finetune.job import run_job

    settings = settings_from(args)  # also configures the data context: the dataset may be an s3:// ref
    base = FinetuneConfig.from_dict(
        load_config_file(args.finetune_config) if args.finetune_config else {},
        where=f"finetune config file {args.finetune_config}",
    )
    config = base.merged(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
    )

    def progress(done: int, total: int, message: str) -> None:
        print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)  # a Job's pod is stopped with SIGTERM
    try:
        metrics = run_job(
            args.backbone,
            _dataset_ref(args.dataset),
            args.out,
            config,
            args.seed,
            resume=args.resume,
            cache_dir=settings.cache_dir,
            progress=progress,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(
        f"fine-tuned {args.backbone} on {args.dataset}: test top1 {metrics['top1']:.4f} "
        f"(best val top1 {metrics['val_top1']:.4f} at epoch {metrics['best_epoch']}/{metrics['epochs']}, "
        f"{metrics['device']} {metrics['precision']}) -> {args.out}/metrics.json"
    )
    return 0
