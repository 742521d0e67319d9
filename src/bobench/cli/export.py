"""`bob export BACKBONE --out REPO`: verified ONNX export + a Triton model repository entry."""

from __future__ import annotations

import argparse
from pathlib import Path

from bobench.cli.common import out_dir, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a backbone to ONNX (verified against torch) and a Triton repository"
    )
    p.add_argument("backbone", help="registered backbone name")
    p.add_argument(
        "-o",
        "--out",
        required=True,
        type=out_dir,
        help="Triton model repository directory (created if missing)",
    )
    p.add_argument(
        "--variant",
        choices=("local", "cluster"),
        default="local",
        help="local: python backend running ONNX Runtime (the tritonserver in nvidia-pytriton); "
        "cluster: onnxruntime_onnx / tensorrt_plan for NVIDIA's Triton image",
    )
    p.add_argument(
        "--input-dtype",
        choices=("uint8", "float32"),
        default="uint8",
        help="input tensor dtype (uint8 = 4x less payload; normalisation runs in the model)",
    )
    p.add_argument("--tensorrt", choices=("fp16", "fp32"), help="also build a TensorRT engine (needs a GPU)")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--instances", type=int, default=1, help="model instances (instance_group count)")
    p.add_argument("--cache-dir", help="export cache (default: settings cache_dir)")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from bobench.backbones import create_backbone
    from bobench.cli.common import settings_from
    from bobench.errors import InvalidArgument
    from bobench.export.onnx_export import export_cached
    from bobench.export.triton_repo import served_model_name, write_model_repository

    if args.max_batch_size <= 0 or args.instances <= 0:
        raise InvalidArgument("--max-batch-size and --instances must be positive")
    if args.tensorrt:
        from bobench.errors import FailedPrecondition
        from bobench.export.tensorrt import tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            raise FailedPrecondition(f"--tensorrt: TensorRT unavailable here: {why}")
    cache_dir = settings_from(args).cache_dir
    loaded = create_backbone(args.backbone, cache_dir=cache_dir)
    report = export_cached(loaded, cache_dir, input_dtype=args.input_dtype)
    options = {"max_batch_size": args.max_batch_size, "instances": args.instances}
    model_dirs = [
        write_model_repository(
            loaded.spec,
            report.path,
            args.out,
            variant=args.variant,
            input_dtype=args.input_dtype,
            export_report=report.to_dict(),
            **options,
        )
    ]
    if args.tensorrt:
        import numpy as np

        from bobench.export.onnx_export import ExportVerificationError
        from bobench.export.tensorrt import build_engine, verify_engine

        plan = Path(args.out) / f"{loaded.spec.name}.plan"
        build_engine(report.path, plan, precision=args.tensorrt, max_batch=args.max_batch_size)
        size = loaded.spec.input_size
        images = np.random.default_rng(0).integers(0, 256, (4, 3, size, size)).astype(args.input_dtype)
        check = verify_engine(plan, report.path, images, atol=5e-2 if args.tensorrt == "fp16" else 1e-3)
        if not check["ok"]:
            raise ExportVerificationError(f"TensorRT engine disagrees with ONNX Runtime: {check}")
        model_dirs.append(
            write_model_repository(
                loaded.spec,
                report.path,
                args.out,
                variant="cluster",
                platform="tensorrt_plan",
                plan_path=plan,
                input_dtype=args.input_dtype,
                model_name=served_model_name(loaded.spec, f"trt-{args.tensorrt}"),
                export_report={**report.to_dict(), "tensorrt": check},
                **options,
            )
        )
    if args.json:
        print_json({**report.to_dict(), "models": [str(d) for d in model_dirs]})
        return 0
    print(f"exported {loaded.spec.name}: {report.path}")
    print(
        f"  exporter {report.exporter}, opset {report.opset}, input {report.input_dtype}, sha256 {report.sha256[:16]}…"
    )
    print(
        f"  verified against torch on fresh input: max abs err {report.max_abs_err:.3g}, "
        f"max rel err {report.max_rel_err:.3g}"
    )
    for d in model_dirs:
        print(f"  model repository entry: {d}")
    return 0
