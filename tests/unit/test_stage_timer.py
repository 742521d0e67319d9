"""The stage timer: a no-op outside a recording, exclusive per-stage seconds inside one.

The clock is driven by the test (`stage_timer._clock`), so the sums are exact and no timing is
asserted; the battle test runs a real toy battle and checks which stages its call sites marked.
"""

from __future__ import annotations

import threading

import pytest

from bobench import stage_timer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(stage_timer, "_clock", fake)
    return fake


def test_outside_a_recording_stage_is_one_shared_noop_and_records_nothing(clock: FakeClock) -> None:
    assert not stage_timer.enabled()
    assert stage_timer.stage("decode") is stage_timer.stage("embedding")
    with stage_timer.stage("decode"):
        clock.advance(5.0)
    stage_timer.add_count("images_embedded", 3)
    with stage_timer.recording() as table:
        pass
    assert table.seconds == {} and table.counts == {}


def test_nested_stages_are_charged_exclusively_and_the_rest_is_other(clock: FakeClock) -> None:
    with stage_timer.recording() as table:
        clock.advance(1.0)  # unclaimed
        with stage_timer.stage("protocol:linear_probe"):
            clock.advance(2.0)
            with stage_timer.stage("embedding"):
                clock.advance(10.0)
            clock.advance(3.0)
            with stage_timer.stage("probe_fit"):
                clock.advance(4.0)
        with stage_timer.stage("embedding"):
            clock.advance(5.0)
        stage_timer.add_count("images_embedded", 32)
        stage_timer.add_count("images_embedded", 8)
    assert table.seconds == {"protocol:linear_probe": 5.0, "embedding": 15.0, "probe_fit": 4.0}
    assert table.entries == {"protocol:linear_probe": 1, "embedding": 2, "probe_fit": 1}
    assert table.counts == {"images_embedded": 40}
    assert table.wall_s == 25.0
    assert table.other_s() == 1.0
    assert not stage_timer.enabled()


def test_timed_decorator_charges_each_call_and_passes_results_through(clock: FakeClock) -> None:
    @stage_timer.timed("probe_fit")
    def fit(x: int) -> int:
        clock.advance(2.0)
        return x * 2

    assert fit(1) == 2  # not recording: plain call
    with stage_timer.recording() as table:
        assert fit(3) == 6 and fit(4) == 8
    assert table.seconds == {"probe_fit": 4.0} and table.entries == {"probe_fit": 2}


def test_a_stage_that_raises_is_still_charged_and_closed(clock: FakeClock) -> None:
    with stage_timer.recording() as table:
        with pytest.raises(ValueError), stage_timer.stage("decode"):
            clock.advance(1.5)
            raise ValueError("bad image")
        with stage_timer.stage("embedding"):
            clock.advance(1.0)
    assert table.seconds == {"decode": 1.5, "embedding": 1.0}


def test_a_second_recording_is_refused_and_other_threads_are_counted_not_timed(clock: FakeClock) -> None:
    with stage_timer.recording() as table:
        with pytest.raises(RuntimeError, match="already open"), stage_timer.recording():
            pass

        def other_thread() -> None:
            with stage_timer.stage("embedding"):
                clock.advance(2.0)

        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert table.seconds == {}
    assert table.counts == {stage_timer.OFF_THREAD: 1}
    assert table.other_s() == 2.0


def test_a_toy_battle_marks_its_stages_and_counts_every_embedded_image(tmp_path) -> None:
    """A real battle (toy backbone, toy dataset, the in-process ONNX Runtime embedder): the call sites
    of each stage fire, and images_embedded is every item of the splits the protocols read."""
    from bobench.battle.runner import run_battle
    from bobench.battle.spec import parse_spec
    from bobench.config import Settings
    from bobench.data import load_dataset

    spec = parse_spec(
        {
            "backbones": ["toy"],
            "datasets": ["toy"],
            "protocols": [{"name": "linear_probe", "config": {"grid": [0.1, 1.0]}}, "knn"],
        }
    )
    settings = Settings(cache_dir=str(tmp_path / "cache"))
    with stage_timer.recording() as table:
        outcome = run_battle(spec, tmp_path / "out", settings, progress=False)
    assert outcome.failed == 0 and outcome.executed == 2
    for name in ("plan", "dataset_load", "decode", "resize_crop", "embedding", "probe_fit",
                 "feature_cache", "embedder_load", "protocol:linear_probe", "protocol:knn"):  # fmt: skip
        assert table.entries.get(name, 0) >= 1, name
    ds = load_dataset("toy")
    assert table.counts["images_embedded"] == sum(len(ds.split(s)) for s in ("train", "val", "test"))
    assert sum(table.seconds.values()) <= table.wall_s
    with stage_timer.recording() as again:  # fully cached: no image is embedded again
        run_battle(spec, tmp_path / "out", settings, progress=False)
    assert "images_embedded" not in again.counts and "embedding" not in again.seconds
