"""Every protocol's numeric knobs are range-checked when the config is resolved, i.e. while a run is
planned (before any dataset loads): no hang on kNN temperature 0 or a linear probe's max_iter -1."""

from __future__ import annotations

import pytest

from bobench.battle.single_run import plan_single_run
from bobench.errors import InvalidArgument
from bobench.protocols import get_protocol
from bobench.protocols.config_checks import CHECKS

BAD = [
    ("knn", {"temperature": 0}, "'temperature' must be > 0"),
    ("knn", {"temperature": -1.0}, "'temperature'"),
    ("knn", {"temperature": float("nan")}, "finite numbers only"),
    ("knn", {"ks": [0]}, "'ks'"),
    ("knn", {"ks": [10**6]}, "<= 10000"),
    ("knn", {"bank_splits": []}, "'bank_splits'"),
    ("linear_probe", {"max_iter": -1}, "'max_iter'"),
    ("linear_probe", {"max_iter": 0}, "'max_iter'"),
    ("linear_probe", {"max_iter": 10**9}, "'max_iter' must be <= 100000"),
    ("linear_probe", {"tol": 0}, "'tol'"),
    ("linear_probe", {"tol": 5.0}, "'tol' must be < 1"),
    ("linear_probe", {"grid": [0.1, -1.0]}, "grid value"),
    ("linear_probe", {"grid": [1.0] * 2000}, "more than 1000"),
    ("fewshot", {"seeds": 10**6}, "'seeds' must be <= 100"),
    ("fewshot", {"shots": [10**6]}, "'shots' must be <= 10000"),
    ("fewshot", {"cv_folds": 1}, "'cv_folds'"),
    ("fewshot", {"max_iter": -1}, "'max_iter'"),
    ("retrieval", {"ks": [0]}, "'ks'"),
    ("retrieval", {"ks": [10**7]}, "<= 10000"),
    ("ood", {"severities": [9]}, "severity 9"),
    ("ood", {"max_iter": -1}, "'max_iter'"),
    ("efficiency", {"timed_steps": 10**9, "max_timed_steps": 10**9}, "'timed_steps' must be <= 1000000"),
    ("efficiency", {"batch_sizes": [2**31 - 1]}, "max_batch_size"),
    ("efficiency", {"min_time_s": 1e6}, "'min_time_s' must be <= 600"),
    ("efficiency", {"warmup_steps": -1}, "'warmup_steps'"),
    ("efficiency", {"flops": "yes"}, "'flops'"),
    ("finetune", {"epochs": 10**7}, "'epochs'"),
    ("finetune", {"batch_size": 2**31 - 1}, "max_batch_size"),
    ("finetune", {"lr": 0.0}, "'lr'"),
    ("detection", {"epochs": 10**7}, "epochs must be an integer in 1..1000"),
    ("detection", {"lr": 0.0}, "lr must be a number in (0.0, 1.0]"),
    ("detection", {"head": "yolo"}, "head must be one of"),
    ("detection", {"min_size": 1000, "max_size": 500}, "min_size must be <= max_size"),
    ("instance_segmentation", {"head": "faster_rcnn"}, "head must be mask_rcnn"),
    ("instance_segmentation", {"batch_size": 0}, "batch_size must be an integer"),
    ("ood_detection", {"source_sites": []}, "source_sites must be a non-empty list"),
    ("ood_detection", {"fpn_channels": 2}, "fpn_channels must be an integer"),
]


def test_the_range_checked_protocols_are_listed():
    assert sorted(CHECKS) == [
        "detection", "efficiency", "fewshot", "finetune", "instance_segmentation", "knn", "linear_probe",
        "ood", "ood_detection", "retrieval", "serving_latency",
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "config", "message"), BAD, ids=[f"{n}-{sorted(c)[0]}" for n, c, _ in BAD])
def test_out_of_range_knob_is_invalid_argument_naming_it(name, config, message):
    with pytest.raises(InvalidArgument) as info:
        get_protocol(name).resolve_config(config)
    assert message in str(info.value)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_every_protocols_defaults_pass_its_checks(name):
    protocol = get_protocol(name)
    assert protocol.resolve_config({}) == protocol.defaults


@pytest.mark.parametrize("config", [{"temperature": 0.0}, {"temperature": 1e-3, "ks": [0]}])
def test_a_bad_knob_fails_planning_before_the_dataset_is_loaded(config):
    loaded = []

    def loader(ref):
        loaded.append(ref)
        raise AssertionError("the dataset must not be loaded for a bad config")

    with pytest.raises(InvalidArgument, match="knn"):
        plan_single_run("toy", "toy", "knn", config, 0, dataset_loader=loader)
    assert loaded == []
