"""The built-in protocols' metadata, torch-free: one `Protocol` each, its `evaluate` a `lazy` reference.

This table is what the scheduler reads to plan a battle (name, version, task, defaults and their
checks, primary metric, `higher_is_better`, `needs_features`, `seeded`); the protocol module named by
`evaluate` (which imports torch, faiss or tritonclient) is imported only when a run executes. The
imports here must stay light: numpy, the option parsers (`bobench.protocols.options`) and the
torch-free config modules of fine-tuning and detection. `PROTOCOLS` imports this module on its
first lookup (`bobench.registry.Registry`).
"""

from __future__ import annotations

from bobench.data.corruptions import CORRUPTIONS
from bobench.detection.config import DEFAULTS as DETECTION_DEFAULTS
from bobench.finetune.config import FinetuneConfig
from bobench.protocols.base import Protocol, register_protocol
from bobench.protocols.options import DEFAULT_CORRUPTIONS, DEFAULT_KS, serving_latency_higher_is_better
from bobench.protocols.serving_scenarios import DEFAULTS as SCENARIO_DEFAULTS
from bobench.registry import lazy

DETECTION_HIGHER_IS_BETTER = {m: True for m in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "val_AP")}

register_protocol(
    Protocol(
        name="linear_probe",
        version="2",
        task="classification",
        evaluate=lazy("bobench.protocols.linear_probe:evaluate"),
        seeded=False,  # deterministic: once per split seed
        defaults={"grid": None, "max_iter": 1000, "tol": 1e-4},
        primary_metric="top1",
        higher_is_better={"top1": True, "top5": True, "mean_per_class_recall": True, "val_top1": True},
        description="L2-regularised logistic regression on frozen L2-normalised features; C chosen on val "
        "(1e-6..1e4 by default); bootstrap CIs over test images.",
    )
)

register_protocol(
    Protocol(
        name="knn",
        version="3",
        task="classification",
        evaluate=lazy("bobench.protocols.knn:evaluate"),
        seeded=False,  # deterministic: once per split seed
        defaults={
            "ks": [10, 20],
            "temperature": 0.07,
            "bank_splits": ["train", "val"],
            "query_split": "test",
        },
        primary_metric="top1",
        higher_is_better={
            "top1": True,
            **{f"top{t}_k{k}": True for t in (1, 5) for k in (1, 5, 10, 20, 50, 100, 200)},
        },
        description="Cosine kNN with exp(sim/T)-weighted votes (DINOv2 protocol) on frozen L2-normalised features.",
    )
)

register_protocol(
    Protocol(
        name="fewshot",
        version="3",
        task="fewshot",
        evaluate=lazy("bobench.protocols.fewshot:evaluate"),
        defaults={
            "shots": [1, 5, 10],
            "seeds": 3,
            "selection": "kshot_val",
            "cv_folds": 5,
            "grid": None,
            "max_iter": 1000,
            "tol": 1e-4,
        },
        primary_metric="top1_fewshot_mean",
        higher_is_better={
            "top1_fewshot_mean": True,
            **{f"top1_{k}shot_mean": True for k in (1, 2, 4, 5, 8, 10, 16, 20, 50, 100)},
        },
        description="k-shot linear probe, C chosen on a k-shot val draw (or CV on the shots); mean ± std "
        "of test top1 over draws, per-draw bootstrap CIs.",
    )
)

register_protocol(
    Protocol(
        name="retrieval",
        version="2",
        task="retrieval",
        evaluate=lazy("bobench.protocols.retrieval:evaluate"),
        seeded=False,  # deterministic: once per split seed
        defaults={
            "ks": list(DEFAULT_KS),
            "query_split": "query",
            "gallery_split": "gallery",
            "query_variant": None,
        },
        primary_metric="mAP",
        higher_is_better={
            "mAP": True,
            "mAP_roxford": True,
            "MRR": True,
            **{
                f"{kind}@{k}": True
                for kind in ("precision", "recall", "hit", "mP")
                for k in (1, 5, 10, 20, 50, 100)
            },
        },
        description=(
            "Cosine retrieval (faiss exact search) on frozen L2-normalised features; labels or per-query "
            "positives/junk define relevance; sklearn-style and revisitop mAP, capped mP@k, MRR, @k metrics."
        ),
    )
)

register_protocol(
    Protocol(
        name="ood",
        version="2",
        task="ood",
        evaluate=lazy("bobench.protocols.ood:evaluate"),
        seeded=False,  # deterministic: once per split seed
        defaults={
            "corruptions": list(DEFAULT_CORRUPTIONS),
            "severities": [3],
            "target": None,
            "target_split": "test",
            "mask_target_classes": False,
            "mce_reference": None,
            "grid": None,
            "max_iter": 1000,
            "tol": 1e-4,
        },
        primary_metric="ood_top1",
        higher_is_better={
            "ood_top1": True,
            "id_top1": True,
            "val_top1": True,
            "mca": True,
            "mca_partial": True,
            "target_top1": True,
            "gap": False,
            "id_err": False,
            "mca_drop": False,
            "mca_relative_drop": False,
            "mca_partial_drop": False,
            "mca_partial_relative_drop": False,
            **{f"err_{name}": False for name in CORRUPTIONS},
        },
        description="Linear probe trained in-distribution, tested on ImageNet-C corruptions and/or a shifted dataset.",
    )
)

register_protocol(
    Protocol(
        name="efficiency",
        version="2",
        task="efficiency",
        evaluate=lazy("bobench.protocols.efficiency:evaluate"),
        seeded=False,  # deterministic: once per split seed
        defaults={
            "batch_sizes": [1, 8, 32],
            "warmup_steps": 10,
            "timed_steps": 40,
            "min_time_s": 0.5,
            "max_timed_steps": 1000,
            "block_steps": 10,
            "block_warmup_steps": 1,
            "flops": True,
        },
        primary_metric="latency_ms_p50_b1",
        higher_is_better={
            "latency_ms_p50_b1": False,
            "latency_ms_p90_b1": False,
            "latency_ms_p99_b1": False,
            "throughput_ips_b1": True,
            "params": False,
            "flops": False,
            "peak_rss_mb": False,
        },
        description="Params, FLOPs (FlopCounterMode), latency percentiles (timm's budget, interleaved "
        "across a battle's backbones on one host) and throughput per batch size, per-batch peak memory.",
        needs_features=False,
    )
)

register_protocol(
    Protocol(
        name="finetune",
        version="2",
        task="finetune",
        evaluate=lazy("bobench.protocols.finetune:evaluate"),
        defaults=FinetuneConfig().to_dict(),
        primary_metric="top1",
        higher_is_better={"top1": True, "top5": True, "val_top1": True, "test_loss": False},
        description="End-to-end fine-tuning (AdamW, timm layer-wise lr decay, warm-up + cosine, optional lr grid "
        "and timm augmentation; BoB recipe preset); test top-1 of the best-val epoch and lr, with a bootstrap CI.",
        job_checkpoint_dir="bobench.protocols.finetune:run_checkpoint_dir",
        needs_features=False,
    )
)

register_protocol(
    Protocol(
        name="serving_latency",
        version="3",
        task="serving",
        evaluate=lazy("bobench.protocols.serving_latency:evaluate"),
        seeded=False,  # deterministic: once per split seed
        defaults={
            "url": None,
            "model": None,
            "batch_sizes": [1, 8],
            "concurrencies": [1, 4],
            "window_s": 1.0,
            "min_requests": 10,
            "max_windows": 10,
            "stable_windows": 3,
            "stability_pct": 10.0,
            "timeout_s": 30.0,
            **SCENARIO_DEFAULTS,
        },
        primary_metric="latency_ms_p50_b1_c1",
        higher_is_better=serving_latency_higher_is_better(),
        description="Triton serving throughput and latency percentiles per batch size and concurrency "
        "(perf_analyzer-style stable windows), with the server-side queue/compute breakdown; MLPerf-style "
        "SingleStream, Server (Poisson, peak QPS under a p99 bound) and Offline scenarios.",
        needs_features=False,
    )
)

register_protocol(
    Protocol(
        name="detection",
        version="1",
        task="detection",
        evaluate=lazy("bobench.protocols.detection:evaluate"),
        defaults=dict(DETECTION_DEFAULTS),
        primary_metric="AP",
        higher_is_better=DETECTION_HIGHER_IS_BETTER,
        description="Object detection: the backbone under torchvision Faster R-CNN + FPN (RetinaNet/FCOS "
        "selectable), regime finetune/frozen/random; test COCO box AP of the best-val epoch with a bootstrap CI.",
        job_checkpoint_dir="bobench.protocols.job_checkpoints:detection_checkpoint_dir",
        needs_features=False,
    )
)

register_protocol(
    Protocol(
        name="instance_segmentation",
        version="1",
        task="detection",
        evaluate=lazy("bobench.protocols.instance_segmentation:evaluate"),
        defaults={**DETECTION_DEFAULTS, "head": "mask_rcnn"},
        primary_metric="mask_AP",
        higher_is_better={
            **DETECTION_HIGHER_IS_BETTER,
            **{f"mask_{k}": v for k, v in DETECTION_HIGHER_IS_BETTER.items()},
        },
        description="Instance segmentation: the backbone under torchvision Mask R-CNN + FPN, regime "
        "finetune/frozen/random; test COCO mask AP (and box AP) of the best-val epoch with bootstrap CIs.",
        job_checkpoint_dir="bobench.protocols.job_checkpoints:instance_segmentation_checkpoint_dir",
        needs_features=False,
    )
)

register_protocol(
    Protocol(
        name="ood_detection",
        version="1",
        task="ood",
        evaluate=lazy("bobench.protocols.ood_detection:evaluate"),
        defaults={**DETECTION_DEFAULTS, "source_sites": ["YELL"], "target": None},
        primary_metric="shift_AP",
        higher_is_better={
            **DETECTION_HIGHER_IS_BETTER,
            **{f"shift_{k}": v for k, v in DETECTION_HIGHER_IS_BETTER.items()},
            "gap": False,
        },
        description="OOD detection: Faster R-CNN + FPN trained on source sites (or dataset), box AP in-domain "
        "and on the shifted domain (tree-crown sites YELL -> OSBS/SOAP), and the gap.",
        job_checkpoint_dir="bobench.protocols.job_checkpoints:ood_detection_checkpoint_dir",
        needs_features=False,
    )
)
