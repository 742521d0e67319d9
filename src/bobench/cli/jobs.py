"""`bob job run`: the container command of a run Job (`bobench.battle.executors.job_entry`).
`bob job render --job-config FILE SPEC`: print, as YAML, exactly the Jobs the Kubernetes executor would
create for the spec's runs whose protocol goes to Jobs (what used to be a hand-edited template)."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("job", help="run Jobs: the container entrypoint and the Job renderer")
    jsub = p.add_subparsers(dest="job_command", metavar="ACTION", required=True)
    run = jsub.add_parser("run", help="run one serialized RunPlan (env BOBENCH_JOB_PLAN) with the store")
    run.add_argument("--plan", help="the RunPlan as JSON (default: env BOBENCH_JOB_PLAN)")
    run.add_argument(
        "--termination-log", default="/dev/termination-log", help="where the failure message goes"
    )
    run.set_defaults(func=cmd_run)
    render = jsub.add_parser("render", help="print the Jobs the scheduler would create for a battle spec")
    render.add_argument("spec", help="battle spec (YAML)")
    render.add_argument("--job-config", required=True, metavar="FILE", help="JobConfig YAML")
    render.add_argument("--store", default="s3://bobench/artifacts", help="store URL the Jobs write to")
    render.add_argument("--s3-endpoint", default="http://minio:9000", help="S3 endpoint the Jobs use")
    render.set_defaults(func=cmd_render)


def cmd_run(args: argparse.Namespace) -> int:
    from bobench.battle.executors.job_entry import main_job
    from bobench.battle.executors.k8s_jobs import BACKBONE_ENV, PLAN_ENV, register_job_backbone
    from bobench.cli.common import settings_from

    settings = settings_from(args)  # also the data context: the run's dataset may be an s3:// ref
    register_job_backbone(os.environ.get(BACKBONE_ENV))  # a user-defined backbone of the battle
    return main_job(args.plan or os.environ.get(PLAN_ENV), settings, args.termination_log)


def cmd_render(args: argparse.Namespace) -> int:
    import dataclasses

    import yaml

    from bobench.battle.executors.k8s_jobs import build_job, load_job_config
    from bobench.battle.plan import plan_battle
    from bobench.battle.spec import load_spec
    from bobench.cli.common import settings_from

    settings_from(args)  # configures the data context: planning fingerprints s3:// datasets
    config = load_job_config(args.job_config)
    config = dataclasses.replace(
        config, store=config.store or args.store, s3_endpoint=config.s3_endpoint or args.s3_endpoint
    )
    plans = [p for p in plan_battle(load_spec(args.spec)) if p.protocol in config.protocols]
    yaml.safe_dump_all([build_job(p, config) for p in plans], sys.stdout, sort_keys=False)
    return 0
