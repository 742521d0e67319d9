"""LocalContext keeps several batches in flight through an embedder that streams (the Triton embedder's
`embed_stream`), with the same features, order and progress as one batch at a time. The streaming
embedder here is a test double around the real ONNX Runtime embedder (no Triton server in a unit
test); the real stream is checked against Triton in tests/integration/test_triton_scenarios.py."""

from __future__ import annotations

import numpy as np

from bobench.battle.context import LocalContext
from bobench.battle.executors.pool import TimedEmbedder
from bobench.data import load_dataset
from bobench.embed import make_embedder
from bobench.embed.cache import FeatureCache


class _Streaming:
    """Delegates to a real embedder and adds `embed_stream`, consuming batches lazily like Triton's."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.spec, self.batch_size = inner.spec, inner.batch_size
        self.streamed: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_stream(self, batches):
        for batch in batches:
            self.streamed.append(len(batch))
            yield self.inner.embed(batch)


def _context(tmp_path, embedder, progress=None) -> LocalContext:
    return LocalContext(
        embedder.spec, load_dataset("toy"), cache=FeatureCache(tmp_path), embedder_factory=lambda: embedder,
        dataset_loader=load_dataset, progress=progress,
    )  # fmt: skip


def test_a_streaming_embedder_gives_the_same_features_in_order_with_progress(tmp_path):
    inner = make_embedder("onnxruntime", "toy", batch_size=8, cache_dir=str(tmp_path), threads=1)
    plain, labels = _context(tmp_path / "plain", inner).features("train")
    streaming = _Streaming(inner)
    seen = []
    streamed, streamed_labels = _context(
        tmp_path / "stream", TimedEmbedder(streaming), lambda done, total, msg: seen.append((done, total))
    ).features("train")
    n = len(labels)
    assert n > 8 and streaming.streamed == [8] * (n // 8) + ([n % 8] if n % 8 else [])  # it streamed
    np.testing.assert_array_equal(streamed_labels, labels)
    np.testing.assert_allclose(streamed, plain, atol=1e-6)
    assert seen[-1] == (n, n) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_the_timed_wrapper_streams_only_where_its_inner_embedder_does(tmp_path):
    inner = make_embedder("onnxruntime", "toy", batch_size=8, cache_dir=str(tmp_path), threads=1)
    assert not hasattr(TimedEmbedder(inner), "embed_stream")
    assert hasattr(TimedEmbedder(_Streaming(inner)), "embed_stream")
