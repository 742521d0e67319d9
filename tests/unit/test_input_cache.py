"""Decode and resize once per input resolution: backbones of a battle that share a preprocessing share
the decoded, resized inputs (`bobench.embed.input_cache`), a corruption sweep prepares its input once,
and the features are exactly those computed without the cache. Counts come from
`bobench.stage_timer` counters and entries, nothing is timed."""

from __future__ import annotations

import numpy as np
import pytest

from bobench import stage_timer
from bobench.backbones import get_spec
from bobench.battle.runner import run_battle
from bobench.battle.spec import parse_spec
from bobench.config import Settings, load_settings
from bobench.embed.cache import FeatureCache
from bobench.embed.input_cache import PreparedInputs, preprocess_key
from bobench.errors import InvalidArgument

SHARED = ("resnet18-random", "convnext_atto-random")  # both 224 px, crop 0.875, bicubic
KEY = (224, 0.875, "bicubic")


def _image(value: int = 7) -> np.ndarray:
    return np.full((3, 4, 4), value, dtype=np.uint8)


class _Prepare:
    """A `prepare` callable that counts its calls."""

    def __init__(self, value: int = 7) -> None:
        self.calls, self.value = 0, value

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return _image(self.value)


def test_an_input_is_kept_for_a_later_backbone_with_the_same_preprocessing_and_then_dropped():
    inputs = PreparedInputs(1 << 20)
    inputs.expect({"a": KEY, "b": KEY})
    prepare = _Prepare()
    first = inputs.get("a", KEY, "ds", 0, prepare)
    again = inputs.get("b", KEY, "ds", 0, prepare)
    assert prepare.calls == 1 and again is first
    assert not first.flags.writeable  # no reader can change what another one reads
    inputs.end_run("a", last=True)  # "b" still waits: kept
    assert inputs.held_bytes == first.nbytes
    inputs.end_run("b", last=True)
    assert inputs.held_bytes == 0
    inputs.get("b", KEY, "ds", 0, prepare)
    assert prepare.calls == 2


def test_nothing_is_kept_that_no_later_reader_would_read():
    inputs = PreparedInputs(1 << 20)
    inputs.expect({"a": KEY, "c": (240, 0.882, "bicubic")})  # no other backbone shares a's preprocessing
    prepare = _Prepare()
    image = inputs.get("a", KEY, "ds", 0, prepare)
    assert inputs.held_bytes == 0 and image.flags.writeable
    inputs.get("a", KEY, "ds", 0, prepare)
    assert prepare.calls == 2
    unplanned = PreparedInputs(1 << 20)  # an evaluator serving single runs: never told the battle
    unplanned.get("a", KEY, "ds", 0, prepare)
    assert unplanned.held_bytes == 0


def test_a_runs_own_reuse_is_kept_until_the_run_ends():
    inputs = PreparedInputs(1 << 20)  # no plan: the corruption sweep of one run
    prepare = _Prepare()
    first = inputs.get("a", KEY, "ds", 3, prepare, reuse_in_run=True)
    assert inputs.get("a", KEY, "ds", 3, prepare, reuse_in_run=True) is first and prepare.calls == 1
    inputs.end_run("a", last=False)
    assert inputs.held_bytes == 0


def test_inputs_are_keyed_by_dataset_item_and_preprocessing():
    inputs = PreparedInputs(1 << 20)
    other_key = (224, 0.9, "bicubic")
    inputs.expect({"a": KEY, "b": KEY, "c": other_key, "d": other_key})
    got = {
        (key, ds, item): inputs.get(name, key, ds, item, _Prepare(value))
        for value, (name, key, ds, item) in enumerate(
            [("a", KEY, "ds1", 0), ("a", KEY, "ds1", 1), ("a", KEY, "ds2", 0), ("c", other_key, "ds1", 0)]
        )
    }
    for (key, ds, item), image in got.items():
        reader = "b" if key == KEY else "d"
        assert inputs.get(reader, key, ds, item, _Prepare(99)) is image
    assert len({int(image[0, 0, 0]) for image in got.values()}) == 4


def test_the_byte_bound_is_held():
    one = _image().nbytes
    inputs = PreparedInputs(2 * one)
    inputs.expect({"a": KEY, "b": KEY})
    for item in range(5):
        inputs.get("a", KEY, "ds", item, _Prepare())
    assert inputs.held_bytes == 2 * one
    prepare = _Prepare()
    for item in range(5):
        inputs.get("b", KEY, "ds", item, prepare)
    assert prepare.calls == 3  # the two kept ones were read, the rest prepared again


def test_a_negative_bound_is_a_settings_error(monkeypatch):
    monkeypatch.setenv("BOBENCH_INPUT_CACHE_MB", "-1")
    with pytest.raises(InvalidArgument, match="input_cache_mb"):
        load_settings()


def test_preprocess_key_is_what_resize_crop_reads():
    assert preprocess_key(get_spec(SHARED[0])) == preprocess_key(get_spec(SHARED[1])) == KEY
    assert preprocess_key(get_spec("efficientnet_lite1")) != KEY


def _battle(
    tmp_path, name: str, input_cache_mb: int, protocols: list
) -> tuple[stage_timer.StageTable, Settings]:
    spec = parse_spec(
        {
            "name": name,
            "backbones": ["toy", *SHARED],
            "datasets": ["toy"],
            "protocols": protocols,
            "seeds": [0],
        }
    )
    settings = Settings(
        cache_dir=str(tmp_path / name), threads=1, batch_size=16, input_cache_mb=input_cache_mb
    )
    with stage_timer.recording() as table:
        outcome = run_battle(spec, tmp_path / f"{name}-out", settings, progress=False)
    assert {r.status for r in outcome.records} == {"finished"}
    return table, settings


def _features(settings: Settings) -> dict[str, np.ndarray]:
    """Every cached feature array of a battle, by its path under the feature cache."""
    root = FeatureCache(settings.cache_dir).root
    found = {}
    for path in sorted(root.rglob("*.npz")):
        with np.load(path) as z:
            found[str(path.relative_to(root))] = z["features"].copy()
    return found


def test_a_battle_decodes_and_resizes_each_image_once_per_preprocessing_with_equal_features(tmp_path):
    """toy (32 px) and two 224-px backbones on the 80 toy images: 80 preparations for toy, 80 for the
    pair (the second backbone reads the first one's inputs); the features equal those of the same
    battle with the cache off."""
    protocols = ["knn"]
    shared, settings_on = _battle(tmp_path, "on", 1024, protocols)
    alone, settings_off = _battle(tmp_path, "off", 0, protocols)
    images = 16 + 16 + 48  # knn embeds train, val and test
    assert shared.counts["inputs_prepared"] == 2 * images
    assert shared.counts["inputs_reused"] == images
    assert shared.entries["decode"] == shared.entries["resize_crop"] == 2 * images
    assert alone.counts["inputs_prepared"] == alone.entries["resize_crop"] == 3 * images
    assert alone.counts.get("inputs_reused", 0) == 0
    on, off = _features(settings_on), _features(settings_off)
    assert on.keys() == off.keys() and len(on) == 3 * 3  # three backbones x three splits
    for name in on:
        np.testing.assert_array_equal(on[name], off[name])


def test_every_corruption_reads_a_read_only_input_without_writing_to_it():
    from bobench.data.corruptions import CORRUPTIONS, apply_variant

    image = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64), dtype=np.uint8)
    image.setflags(write=False)
    before = image.copy()
    for name in CORRUPTIONS:
        out = apply_variant(image.transpose(1, 2, 0), f"corrupt:{name}:5", seed=1)
        assert out.shape[2] == 3, name
    np.testing.assert_array_equal(image, before)


def test_a_corruption_sweep_prepares_each_input_twice_not_once_per_variant(tmp_path):
    """ood on toy with 2 corruptions x 2 severities: the clean splits, then the test split's 16 images
    prepared once for the first variant and read by the other three."""
    ood = {"name": "ood", "config": {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5],
                                     "target": None, "grid": [0.1, 1.0, 10.0]}}  # fmt: skip
    spec = parse_spec(
        {"name": "sweep", "backbones": ["toy"], "datasets": ["toy"], "protocols": [ood], "seeds": [0]}
    )
    settings = Settings(cache_dir=str(tmp_path / "cache"), threads=1, batch_size=16)
    with stage_timer.recording() as table:
        outcome = run_battle(spec, tmp_path / "out", settings, progress=False)
    assert {r.status for r in outcome.records} == {"finished"}
    clean = 48 + 16 + 16
    assert table.counts["inputs_prepared"] == clean + 16
    assert table.counts["inputs_reused"] == 3 * 16
    assert table.entries["corruption"] == 4 * 16
