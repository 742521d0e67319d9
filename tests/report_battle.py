"""A synthetic battle's run records for the report tests (tests/unit/test_report.py and the headless
Chromium check in tests/integration/test_report_chromium.py)."""

from __future__ import annotations

import numpy as np

from bobench.results import RunRecord

BACKBONES = {  # name: (family, method, params, quality, latency_ms)
    "convnext_tiny": ("cnn", "supervised", 28.6e6, 0.9, 9.0),
    "vit_small_dino": ("vit", "ssl", 22.0e6, 0.7, 7.5),
    "clip_vit_b16": ("vit", "vision-language", 86.0e6, 1.0, 21.0),
    "resnet50": ("cnn", "supervised", 25.6e6, 0.5, 8.0),
    "swinv2_tiny": ("hierarchical-vit", "supervised", 28.0e6, 0.8, 14.0),
    "mae_vit_b": ("vit", "generative", 86.0e6, 0.2, 20.0),
    "random_resnet18": ("cnn", "random", 11.7e6, -1.0, 3.0),
}
ENV = {
    "device": "cpu",
    "runtime": "onnxruntime",
    "threads": 2,
    "precision": "fp32",
    "versions": {"onnxruntime": "1.32.0"},
}


def record(
    i: int, backbone: str, task: str, dataset: str, protocol: str, metrics: dict, primary, hib=True, **kw
):
    family, method, params, _, _ = BACKBONES.get(backbone, ("vit", "ssl", None, 0, 0))
    return RunRecord(
        run_key=f"r{i:04d}",
        backbone=backbone,
        dataset=dataset,
        protocol=protocol,
        protocol_version="1",
        task=task,
        config={"batch_size": 32},
        seed=kw.pop("seed", 0),
        status=kw.pop("status", "finished"),
        metrics=metrics,
        higher_is_better={m: hib for m in metrics},
        primary_metric=primary,
        backbone_info={"family": family, "pretraining_method": method, "num_params": params},
        environment=ENV,
        **kw,
    )


def synthetic_battle() -> list[RunRecord]:
    """7 backbones x 4 tasks (2 seeds on classification), costs, serving for 3, a failure, a partial backbone."""
    rng = np.random.default_rng(0)
    recs, i = [], 0
    for b, (_, _, _, quality, latency_ms) in BACKBONES.items():
        for dataset in ("lfw", "mnist"):
            for seed in (0, 1):
                top1 = 0.7 + 0.1 * quality + rng.normal(0, 0.003)
                recs.append(
                    record(
                        i := i + 1,
                        b,
                        "classification",
                        dataset,
                        "linear_probe",
                        {"top1": top1, "top5": 1.0},
                        "top1",
                        seed=seed,
                    )
                )
        recs.append(
            record(
                i := i + 1,
                b,
                "retrieval",
                "photos",
                "retrieval",
                {"map": 0.5 + 0.2 * quality + rng.normal(0, 0.01)},
                "map",
            )
        )
        recs.append(
            record(
                i := i + 1,
                b,
                "ood",
                "uci_digits",
                "ood",
                {"error": 0.6 - 0.1 * quality + rng.normal(0, 0.01)},
                "error",
                hib=False,
            )
        )
        recs.append(
            record(
                i := i + 1,
                b,
                "fewshot",
                "lfw",
                "fewshot",
                {"top1_5shot": 0.6 + 0.1 * quality + rng.normal(0, 0.01)},
                "top1_5shot",
            )
        )
        eff = {
            "latency_ms_p50_b1": latency_ms,
            "latency_ms_p50_b32": 20 * latency_ms,
            "throughput_ips_b32": 32000 / (20 * latency_ms),
            "params": BACKBONES[b][2],
            "flops": None,
        }
        recs.append(record(i := i + 1, b, "efficiency", "synthetic", "efficiency", eff, None))
        if b in ("convnext_tiny", "resnet50", "clip_vit_b16"):
            srv = {
                "latency_ms_p50_b1_c1": latency_ms + 1.5,
                "latency_ms_p50_b1_c8": 4 * latency_ms,
                "throughput_ips_b1_c8": 400 / latency_ms,
            }
            recs.append(record(i := i + 1, b, "serving", "synthetic", "serving_latency", srv, None))
    recs.append(record(i := i + 1, "partial_vit", "retrieval", "photos", "retrieval", {"map": 0.9}, "map"))
    recs.append(
        record(
            i := i + 1,
            "resnet50",
            "ood",
            "imagenet_c",
            "ood",
            {},
            "error",
            hib=False,
            status="failed",
            error="Traceback (most recent call last):\n  ...\nRuntimeError: <out of memory> & more",
        )
    )
    return recs  # fmt: skip
