"""`bob publish BACKBONE... --store s3://bucket/prefix`: export, upload to the Triton model store, load.

A thin adapter over `bobench.serving.publish.publish`: S3 endpoint and credentials come from the
settings (BOBENCH_S3_*), the Triton admin key from `triton_admin_key` (BOBENCH_TRITON_ADMIN_KEY).
Prints one line per backbone (or JSON with --json); a backbone that fails stops the command with
its error (exit 1) after the ones before it were published.
"""

from __future__ import annotations

import argparse
import os

from bobench.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    from bobench.export.triton_repo import EMBEDDER_VARIANTS
    from bobench.serving.publish import TARGETS

    p = sub.add_parser(
        "publish", help="publish backbones to an S3 Triton model repository and load them on Triton"
    )
    p.add_argument("backbones", nargs="+", metavar="BACKBONE", help="registered backbone names")
    p.add_argument("--store", required=True, help="model repository root, s3://bucket/prefix")
    p.add_argument("--variant", choices=EMBEDDER_VARIANTS, default="onnx", help="served model variant")
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="local",
        help="local: python backend (nvidia-pytriton's tritonserver); cluster-gpu: onnxruntime_onnx / "
        "tensorrt_plan on KIND_GPU; cluster-cpu: onnxruntime_onnx on KIND_CPU",
    )
    p.add_argument("--triton-url", help="Triton gRPC address to load the models on (default: no load)")
    p.add_argument("--input-dtype", choices=("uint8", "float32"), default="uint8")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--instances", type=int, default=1, help="model instances (instance_group count)")
    p.add_argument(
        "--preferred-batch-sizes",
        help="dynamic batching: comma-separated preferred batch sizes (default 8,16,32)",
    )
    p.add_argument("--max-queue-delay-us", type=int, help="dynamic batching: max queue delay (default 100)")
    p.add_argument(
        "--no-dynamic-batching", action="store_true", help="serve each request as sent (no batcher)"
    )
    p.add_argument("--cache-dir", help="export cache (default: settings cache_dir)")
    p.add_argument("--json", action="store_true", help="print the published models as JSON")
    p.set_defaults(func=cmd_publish)


def cmd_publish(args: argparse.Namespace) -> int:
    from bobench.battle.executors.k8s_jobs import BACKBONE_ENV, register_job_backbone
    from bobench.cli.common import settings_from
    from bobench.errors import InvalidArgument
    from bobench.serving.publish import publish
    from bobench.store import open_store

    if args.max_batch_size <= 0 or args.instances <= 0:
        raise InvalidArgument("--max-batch-size and --instances must be positive")
    if not args.store.startswith("s3://"):
        raise InvalidArgument(
            f"--store: Triton reads its models from S3; expected s3://bucket/prefix, got {args.store!r}"
        )
    settings = settings_from(args)
    register_job_backbone(os.environ.get(BACKBONE_ENV))  # in a publish Job: a battle's own backbone
    store = open_store(args.store, settings, create_bucket=True)
    published = []
    batching = _batching_options(args)
    for name in args.backbones:
        model = publish(
            name,
            store,
            args.variant,
            target=args.target,
            input_dtype=args.input_dtype,
            cache_dir=settings.cache_dir,
            triton_url=args.triton_url,
            admin_key=settings.triton_admin_key,
            max_batch_size=args.max_batch_size,
            instances=args.instances,
            **batching,
        )
        published.append(model.to_dict())
        if not args.json:
            what = "uploaded" if model.uploaded else "already published, nothing uploaded"
            loaded = f"; loaded on {args.triton_url}" if model.loaded else ""
            print(f"{model.model_name} version {model.version} in {model.store_url}: {what}{loaded}")
    if args.json:
        print_json(published)
    return 0


def _batching_options(args: argparse.Namespace) -> dict:
    """The dynamic-batching options given on the command line (none: the repository defaults)."""
    from bobench.errors import InvalidArgument

    out: dict = {}
    if args.no_dynamic_batching:
        out["dynamic_batching"] = False
    if args.preferred_batch_sizes:
        try:
            out["preferred_batch_sizes"] = tuple(int(v) for v in args.preferred_batch_sizes.split(","))
        except ValueError:
            raise InvalidArgument(
                f"--preferred-batch-sizes: expected comma-separated integers, got {args.preferred_batch_sizes!r}"
            ) from None
    if args.max_queue_delay_us is not None:
        out["max_queue_delay_us"] = args.max_queue_delay_us
    return out
