"""Dynamic batching per model on the real tritonserver: on merges concurrent requests, off runs each as sent."""

from __future__ import annotations

import numpy as np
import pytest

from bobench.protocols.serving_latency import server_stats
from bobench.protocols.serving_scenarios import triton_issuer
from bobench.serving import loadgen as lg

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory):
    """tritonserver serving `toy` twice: toy_db (dynamic batching, 20 ms queue delay) and toy_nodb."""
    from bobench.errors import Unavailable
    from bobench.serving.embedder_service import build_repository_for
    from bobench.serving.triton import TritonServer, tritonserver_home

    try:
        tritonserver_home()
    except Unavailable as exc:
        pytest.skip(str(exc))
    from bobench.stack.procs import stop_pid

    root = tmp_path_factory.mktemp("batching")
    repo, cache = root / "repo", root / "cache"
    common = {"max_batch_size": 32, "intra_op_threads": 1}
    build_repository_for(["toy"], repo, cache, model_name="toy_db", preferred_batch_sizes=(8, 16),
                         max_queue_delay_us=20_000, **common)  # fmt: skip
    build_repository_for(["toy"], repo, cache, model_name="toy_nodb", dynamic_batching=False, **common)
    server = TritonServer(repo, log_dir=root / "log")
    server.start(timeout_s=120)
    pid = server.pid
    try:
        yield server
    finally:
        server.stop()
        stop_pid(pid)


def _burst_executions(server, model: str, queries: int) -> tuple[float, float]:
    client = server.client()
    size = client.get_model_config(model).config.input[0].dims[-1]
    images = np.zeros((1, 3, size, size), dtype=np.uint8)
    before = server_stats(client, model)
    result = lg.run_offline(
        triton_issuer(client, model, images, 30.0), lg.ScenarioSettings(queries, 0.0, 30.0)
    )
    after = server_stats(client, model)
    assert result.queries >= queries
    return (
        after["inference_count"] - before["inference_count"],
        after["execution_count"] - before["execution_count"],
    )


def test_dynamic_batching_off_runs_every_request_alone_and_on_merges_them(batching_server):
    served = batching_server.client().get_model_config("toy_nodb").config
    assert not served.HasField("dynamic_batching")
    images, executions = _burst_executions(batching_server, "toy_nodb", 64)
    assert executions == images >= 64
    images, executions = _burst_executions(batching_server, "toy_db", 64)
    assert executions < images / 2, (executions, images)  # 64 at once, merged into batches of 8/16
