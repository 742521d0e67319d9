"""LocalExecutor on the real Triton embedder: after a backbone Triton does not serve fails to get an
embedder, the next run of a served backbone still embeds (it used to get the *closed* previous
embedder and fail "Cannot invoke RPC on closed channel!")."""

from __future__ import annotations

import numpy as np
import pytest

from bobench.backbones import get_spec
from bobench.battle.executors.local import LocalExecutor
from bobench.config import Settings
from bobench.errors import NotFound

pytestmark = pytest.mark.integration


def test_served_backbone_embeds_after_an_unserved_one_failed(tmp_path, triton_toy):
    settings = Settings(
        cache_dir=str(tmp_path), embedder="triton", triton_url=triton_toy["server"].grpc_url, batch_size=4
    )
    executor = LocalExecutor(settings)
    toy = get_spec("toy")
    images = np.zeros((2, 3, toy.input_size, toy.input_size), dtype=np.uint8)
    first = executor.embedder(toy).embed(images)
    with pytest.raises(NotFound):
        executor.embedder(get_spec("resnet18-random"))  # not in the Triton repository
    np.testing.assert_allclose(executor.embedder(toy).embed(images), first, atol=1e-6)
    executor.close()
