"""The serving-latency protocol's LoadGen-style scenarios against the real tritonserver (toy model)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from bobench.backbones.spec import BackboneSpec
from bobench.embed.triton_embedder import TritonEmbedder
from bobench.errors import InvalidArgument, NotFound
from bobench.protocols import get_protocol
from bobench.protocols import serving_scenarios as scn
from bobench.serving import loadgen as lg

pytestmark = pytest.mark.integration

SWEEP = {"window_s": 0.2, "min_requests": 3, "max_windows": 4, "stable_windows": 2, "stability_pct": 50.0,
         "batch_sizes": [1], "concurrencies": [1]}  # fmt: skip
SHORT = {"singlestream_min_queries": 30, "singlestream_min_duration_s": 0.3, "server_target_qps": 40.0,
         "server_min_queries": 60, "server_min_duration_s": 1.0, "server_latency_bound_ms": 500.0,
         "server_max_search_runs": 3, "offline_min_samples": 32, "offline_min_duration_s": 0.3,
         "scenario_max_duration_s": 5.0}  # fmt: skip


class TritonContext:
    """The part of a RunContext this protocol uses: the spec, the run's embedder, the stop check."""

    def __init__(self, spec: BackboneSpec, embedder) -> None:
        self.spec = spec
        self._embedder = embedder
        self.steps = 0

    def embedder(self):
        return self._embedder

    def progress(self, done: int, total: int, message: str = "") -> None:
        self.steps += 1


@pytest.fixture
def toy_embedder(triton_toy):
    spec = BackboneSpec.from_dict(triton_toy["spec_dict"])
    emb = TritonEmbedder(spec, url=triton_toy["server"].grpc_url)
    yield spec, emb
    emb.close()


def test_all_three_scenarios_run_through_triton_with_their_settings_recorded(toy_embedder):
    spec, emb = toy_embedder
    proto = get_protocol("serving_latency")
    ctx = TritonContext(spec, emb)
    m = proto.evaluate(ctx, proto.resolve_config({**SWEEP, **SHORT}), 0)
    ss = [m[f"scenario_singlestream_latency_ms_p{q}"] for q in (50, 90, 99)]
    assert all(v > 0 for v in ss) and ss == sorted(ss)
    assert m["scenario_singlestream_queries"] >= 30 and m["scenario_singlestream_duration_s"] >= 0.3
    # Server at 40 QPS: issued on the Poisson schedule, met a generous bound
    assert m["scenario_server_queries"] >= 60
    assert m["scenario_server_qps_issued"] == pytest.approx(m["scenario_server_qps_scheduled"], rel=0.05)
    assert m["scenario_server_meets_bound"] is True
    assert m["scenario_server_interarrival_ks_p"] > 0.001
    assert m["scenario_server_latency_ms_p99"] <= 500.0
    # the search doubled from 40 QPS within its 3-run budget; its peak met the bound
    assert m["scenario_server_peak_qps"] >= 40.0 and m["scenario_server_peak_runs"] <= 3
    assert m["scenario_server_peak_latency_ms_p99"] <= 500.0
    assert m["scenario_offline_throughput_ips"] > 0 and m["scenario_offline_samples"] >= 32
    recorded = m["context"]["scenarios"]
    assert recorded["server"]["min_query_count"] == 60 and recorded["server"]["latency_bound_ms"] == 500.0
    assert recorded["singlestream"]["min_duration_s"] == 0.3 and recorded["offline"]["min_query_count"] == 32
    assert [r["qps"] for r in recorded["server_search"]][:2] == [40.0, 80.0]
    assert ctx.steps > 10  # the run's stop check was polled during the load


def test_an_unreachable_bound_fails_the_server_scenario_and_finds_no_peak(toy_embedder):
    spec, emb = toy_embedder
    proto = get_protocol("serving_latency")
    config = {**SWEEP, **SHORT, "scenarios": ["server"], "server_latency_bound_ms": 0.001}
    m = proto.evaluate(TritonContext(spec, emb), proto.resolve_config(config), 0)
    assert m["scenario_server_meets_bound"] is False
    assert m["scenario_server_peak_qps"] is None
    assert "scenario_singlestream_latency_ms_p90" not in m and "scenario_offline_throughput_ips" not in m


def test_scenario_batch_beyond_the_models_max_batch_size_is_refused(toy_embedder):
    spec, emb = toy_embedder
    proto = get_protocol("serving_latency")
    config = {**SWEEP, **SHORT, "scenario_batch_size": 64}  # the toy model takes 32 at most
    with pytest.raises(InvalidArgument, match="scenario_batch_size 64"):
        proto.evaluate(TritonContext(spec, emb), proto.resolve_config(config), 0)


def test_a_query_error_from_triton_stops_the_scenario_as_a_bobench_error(triton_toy):
    client = grpcclient.InferenceServerClient(triton_toy["server"].grpc_url)
    try:
        issue = scn.triton_issuer(client, "no_such_model", np.zeros((1, 3, 8, 8), np.uint8), 10.0)
        with pytest.raises(NotFound, match="no_such_model"):
            lg.run_single_stream(issue, lg.ScenarioSettings(5, 0.0, 5.0))
    finally:
        client.close()


def test_embed_stream_keeps_batches_in_flight_and_yields_them_in_order(triton_toy):
    spec = BackboneSpec.from_dict(triton_toy["spec_dict"])
    emb = TritonEmbedder(spec, url=triton_toy["server"].grpc_url, batch_size=4, concurrency=3)
    size = spec.input_size
    batches = [
        np.random.default_rng(i).integers(0, 256, (4, 3, size, size), dtype=np.uint8) for i in range(8)
    ]
    pulled: list[int] = []

    def source():
        for i, b in enumerate(batches):
            pulled.append(i)
            yield b

    try:
        stream = emb.embed_stream(source())
        first = next(stream)
        assert len(pulled) == 4  # 3 in flight plus the one whose turn came: read ahead of the answers
        rest = list(stream)
        expected = emb.embed(np.concatenate(batches))
    finally:
        emb.close()
    got = np.concatenate([first, *rest])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert emb.forward_passes == 8 + 8 and emb.images_embedded == 64
