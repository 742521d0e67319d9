"""TritonEmbedder: the same tensor contract as the in-process embedders, served by Triton over gRPC.

Batches are sent with bounded concurrency (a thread pool; one blocking gRPC call per batch), each
with a deadline. A transport failure (UNAVAILABLE, or a call on a channel that was closed) makes a
fresh client and channel (a gRPC channel to a server that died backs its reconnects off for up to
two minutes, a closed one never works again) and is retried with exponential backoff for at least
`retries` attempts and `retry_window_s` seconds (`make_embedder("triton")`: SERVICE_RETRY_WINDOW_S,
long enough for a supervised Triton to come back, `bobench.serving.embedder_service`); right after such a
reconnect an "unknown model" is retried too (the restarted server may still be loading it). Then it
raises Unavailable, a transient error the scheduler retries. Nothing else is retried (a bad request does not get better by repeating it).
`embed_stream(batches)` keeps up to `concurrency` batches in flight while it reads the next ones
from an iterator (so preparing batch i+1 overlaps inferring batch i) and yields features in order.
With `shared_memory=True` (client and server on one host) the images and features travel through
POSIX shared-memory regions instead of the gRPC payload; they are registered again after a reconnect.
With a `service_key` (setting `triton_service_key`) every call carries Triton's service header
(`bobench.serving.triton_access`); without it a restricted Triton refuses inference and metadata with
PermissionDenied naming that setting. The key is never logged or put in `describe()`.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bobench.backbones.spec import BackboneSpec
from bobench.embed.base import Embedder
from bobench.errors import BobenchError, InvalidArgument, NotFound, Unavailable
from bobench.tensors import INPUT_NAME, OUTPUT_NAME
from bobench.triton_errors import to_bobench_error

log = logging.getLogger(__name__)

_TRITON_DTYPES = {"uint8": ("TYPE_UINT8", np.uint8), "float32": ("TYPE_FP32", np.float32)}
_region_ids = itertools.count()
MAX_BACKOFF_S = 2.0
# What `make_embedder("triton", ...)` (the evaluators' path) waits for an unreachable Triton: a
# supervised one is back within seconds; longer outages fail the run as transient (scheduler retry).
SERVICE_RETRY_WINDOW_S = 15.0


class TritonEmbedder(Embedder):
    """Embeds through a Triton model serving the bobench tensor contract.

    `backbone` is a BackboneSpec or a backbone name; with a name, the spec is read from the model's
    config (`bobench_spec` parameter written by the repository generator). Without `model_name` the
    model asked for is `served_model_name(spec, embedder_variant)`, the name `bob publish` used.
    Raises NotFound for an
    unknown model, Unavailable when the server cannot be reached, InvalidArgument when the served
    model does not match the spec (dims, dtype, batch size).
    """

    runtime = "triton"

    def __init__(
        self,
        backbone: BackboneSpec | str,
        url: str = "127.0.0.1:8001",
        model_name: str | None = None,
        batch_size: int = 32,
        concurrency: int = 4,
        timeout_s: float = 60.0,
        retries: int = 3,
        shared_memory: bool = False,
        input_dtype: str = "uint8",
        backoff_s: float = 0.1,
        embedder_variant: str = "onnx",
        retry_window_s: float = 0.0,
        service_key: str = "",
    ) -> None:
        from bobench.export.tensorrt import precision_of_variant
        from bobench.export.triton_repo import SPEC_PARAMETER, served_model_name

        if input_dtype not in _TRITON_DTYPES:
            raise InvalidArgument(f"input_dtype must be one of {sorted(_TRITON_DTYPES)}, got {input_dtype!r}")
        if concurrency < 1 or batch_size < 1 or retries < 0 or retry_window_s < 0:
            raise InvalidArgument(
                f"need concurrency >= 1, batch_size >= 1, retries >= 0, retry_window_s >= 0; got "
                f"{concurrency}, {batch_size}, {retries}, {retry_window_s}"
            )
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.retry_window_s = retry_window_s
        self.concurrency = concurrency
        self.input_dtype = input_dtype
        self._service_key = service_key
        self._client_lock = threading.Lock()
        self._generation = 0  # bumped by every reconnect
        self.reconnects = 0
        self.client = self._new_client()
        spec = backbone if isinstance(backbone, BackboneSpec) else None
        self.model_name = model_name or served_model_name(spec or str(backbone), embedder_variant)
        self.embedder_variant = embedder_variant
        self.precision = precision_of_variant(embedder_variant)  # a TensorRT fp16 model computes in fp16
        self.where = f"Triton model {self.model_name!r} at {url}"
        config = self._call(
            lambda: self.client.get_model_config(self.model_name, client_timeout=timeout_s)
        ).config
        if spec is None:
            raw = (
                config.parameters[SPEC_PARAMETER].string_value if SPEC_PARAMETER in config.parameters else ""
            )
            if not raw:
                raise InvalidArgument(
                    f"{self.where}: its config has no {SPEC_PARAMETER!r} parameter; pass a "
                    "BackboneSpec instead of a name"
                )
            spec = BackboneSpec.from_dict(json.loads(raw))
        super().__init__(spec, batch_size=batch_size)
        self.model_config = config
        self.model_versions = self._served_versions()
        self._check_config(config)
        self.shared_memory = shared_memory
        self._local = threading.local()
        self._regions: list[tuple[str, Any]] = []
        self._regions_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # -- Embedder interface ------------------------------------------------------------------------
    def embed(self, images: np.ndarray) -> np.ndarray:
        """Features float32 [N, D]; batches of `batch_size` run `concurrency` at a time, order kept."""
        images = self._to_transport(np.asarray(images))
        batches = [images[i : i + self.batch_size] for i in range(0, images.shape[0], self.batch_size)]
        if not batches:
            return np.zeros((0, self.spec.embed_dim or 0), dtype=np.float32)
        if len(batches) == 1 or self.concurrency == 1:
            outputs = [self.infer_batch(b) for b in batches]
        else:
            outputs = list(self._executor().map(self.infer_batch, batches))
        self.forward_passes += len(batches)
        self.images_embedded += images.shape[0]
        return np.concatenate(outputs, axis=0)

    def embed_stream(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Features of each batch of `batches`, in order, with up to `concurrency` batches in flight.

        `batches` is read lazily: the next batch is taken (prepared by the caller's generator) while
        earlier ones are being inferred. A failed batch raises its bobench error when its turn to be
        yielded comes; batches not yet sent are cancelled when the stream is closed or fails.
        """
        pending: collections.deque = collections.deque()
        try:
            for raw in batches:
                batch = self._to_transport(np.asarray(raw))
                pending.append((self._executor().submit(self.infer_batch, batch), batch.shape[0]))
                if len(pending) > self.concurrency:  # `concurrency` stay in flight while the caller reads on
                    yield self._finish(*pending.popleft())
            while pending:
                yield self._finish(*pending.popleft())
        finally:
            for future, _ in pending:
                future.cancel()

    def _finish(self, future, images: int) -> np.ndarray:
        features = future.result()
        self.forward_passes += 1
        self.images_embedded += images
        return features

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="triton-embed")
        return self._pool

    def _embed_batch(self, batch: np.ndarray) -> np.ndarray:
        return self.infer_batch(self._to_transport(np.asarray(batch)))

    def infer_batch(self, batch: np.ndarray) -> np.ndarray:
        """Send one batch exactly as given (no local checks); server errors become bobench errors."""
        if self.shared_memory:
            return self._call(lambda: self._infer_shm(batch))
        return self._call(lambda: self._infer_grpc(batch))

    def describe(self) -> dict:
        backend = self.model_config.backend or self.model_config.platform
        return {
            **super().describe(),
            "url": self.url,
            "model": self.model_name,
            "model_version": ",".join(self.model_versions),
            "embedder_variant": self.embedder_variant,
            "transport": "grpc",
            "input_dtype": self.input_dtype,
            "shared_memory": self.shared_memory,
            "server_backend": backend,
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
        }

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._release_regions()
        self.client.close()

    # -- requests ----------------------------------------------------------------------------------
    def _new_client(self):
        from bobench.serving.triton_access import service_client

        return service_client(self.url, self._service_key)

    def _reconnect(self, generation: int) -> None:
        """Replace the client of `generation` by a fresh one (once, however many threads saw it fail)."""
        with self._client_lock:
            if generation != self._generation:
                return
            old, self.client = self.client, self._new_client()
            self._generation += 1
            self.reconnects += 1
        try:
            old.close()
        except Exception as exc:  # a broken channel may fail to close; it is dropped either way
            log.debug("closing the old client of %s failed: %s", self.where, exc)

    def _call(self, fn):
        """Run `fn` (which reads `self.client`), reconnecting and retrying transport failures (see
        the module docstring); every failure becomes a bobench error."""
        t0 = time.monotonic()
        reconnected = False
        for attempt in itertools.count():
            generation = self._generation
            try:
                return fn()
            except BobenchError:
                raise
            except Exception as exc:
                error = to_bobench_error(exc, self.where)
                transport = isinstance(error, Unavailable)  # a closed channel too (triton_errors)
                if not transport and not (reconnected and isinstance(error, NotFound)):
                    raise error from None
                elapsed_s = time.monotonic() - t0
                if attempt >= self.retries and elapsed_s >= self.retry_window_s:
                    if not transport:  # the model is still unknown after the server came back
                        raise error from None
                    raise Unavailable(
                        f"{self.where}: unreachable for {elapsed_s:.1f} s ({attempt + 1} attempts, "
                        f"{self.reconnects} reconnects): {error}"
                    ) from None
                delay_s = min(MAX_BACKOFF_S, self.backoff_s * (2**attempt))
                log.warning(
                    "%s unavailable (attempt %d, %.1f s so far); new channel, retrying in %.2f s: %s",
                    self.where,
                    attempt + 1,
                    elapsed_s,
                    delay_s,
                    str(error).splitlines()[0][:200],
                )
                if transport:
                    self._reconnect(generation)
                    reconnected = True
                time.sleep(delay_s)
        raise AssertionError("unreachable")  # pragma: no cover

    def _infer_grpc(self, batch: np.ndarray) -> np.ndarray:
        import tritonclient.grpc as grpcclient

        inp = grpcclient.InferInput(INPUT_NAME, list(batch.shape), _numpy_to_triton(batch.dtype))
        inp.set_data_from_numpy(np.ascontiguousarray(batch))
        out = grpcclient.InferRequestedOutput(OUTPUT_NAME)
        result = self.client.infer(self.model_name, [inp], outputs=[out], client_timeout=self.timeout_s)
        return np.asarray(result.as_numpy(OUTPUT_NAME), dtype=np.float32)

    def _infer_shm(self, batch: np.ndarray) -> np.ndarray:
        import tritonclient.grpc as grpcclient
        import tritonclient.utils.shared_memory as shm

        batch = np.ascontiguousarray(batch)
        in_name, in_handle, out_name, out_handle, capacity = self._thread_regions()
        out_bytes = batch.shape[0] * int(self.spec.embed_dim) * 4
        if batch.nbytes > capacity[0] or out_bytes > capacity[1]:
            return self._infer_grpc(batch)  # larger than the regions sized for batch_size
        shm.set_shared_memory_region(in_handle, [batch])
        inp = grpcclient.InferInput(INPUT_NAME, list(batch.shape), _numpy_to_triton(batch.dtype))
        inp.set_shared_memory(in_name, batch.nbytes)
        out = grpcclient.InferRequestedOutput(OUTPUT_NAME)
        out.set_shared_memory(out_name, out_bytes)
        self.client.infer(self.model_name, [inp], outputs=[out], client_timeout=self.timeout_s)
        features = shm.get_contents_as_numpy(
            out_handle, np.float32, [batch.shape[0], int(self.spec.embed_dim)]
        )
        return np.array(features, copy=True)

    def _thread_regions(self):
        """This thread's (input, output) shared-memory regions, created and registered on first use."""
        regions = getattr(self._local, "regions", None)
        if regions is not None and getattr(self._local, "generation", 0) != self._generation:
            self._register_again(regions)  # a new client: the server may have restarted without them
        if regions is None:
            import tritonclient.utils.shared_memory as shm

            size = self.spec.input_size
            in_bytes = (
                self.batch_size * 3 * size * size * np.dtype(_TRITON_DTYPES[self.input_dtype][1]).itemsize
            )
            out_bytes = self.batch_size * int(self.spec.embed_dim) * 4
            tag = f"bobench_{os.getpid()}_{next(_region_ids)}"
            handles = []
            for suffix, nbytes in (("in", in_bytes), ("out", out_bytes)):
                name = f"{tag}_{suffix}"
                handle = shm.create_shared_memory_region(name, f"/{name}", nbytes)
                with self._regions_lock:
                    self._regions.append((name, handle))
                self.client.register_system_shared_memory(
                    name, f"/{name}", nbytes, client_timeout=self.timeout_s
                )
                handles.append((name, handle))
            regions = (handles[0][0], handles[0][1], handles[1][0], handles[1][1], (in_bytes, out_bytes))
            self._local.regions = regions
            self._local.generation = self._generation
        return regions

    def _register_again(self, regions) -> None:
        """Register this thread's regions with the current client's server (unregistering first, in
        case it is the same server and still has them)."""
        in_name, _, out_name, _, (in_bytes, out_bytes) = regions
        self._local.generation = self._generation
        for name, nbytes in ((in_name, in_bytes), (out_name, out_bytes)):
            try:
                self.client.unregister_system_shared_memory(name, client_timeout=self.timeout_s)
            except Exception as exc:  # a restarted server does not know it
                log.debug("could not unregister %s: %s", name, exc)
            self.client.register_system_shared_memory(name, f"/{name}", nbytes, client_timeout=self.timeout_s)

    def _release_regions(self) -> None:
        import tritonclient.utils.shared_memory as shm

        with self._regions_lock:
            regions, self._regions = self._regions, []
        for name, handle in regions:
            try:
                self.client.unregister_system_shared_memory(name, client_timeout=self.timeout_s)
            except Exception as exc:  # server gone: the region is still ours to destroy
                log.debug("could not unregister %s: %s", name, exc)
            shm.destroy_shared_memory_region(handle)
        self._local = threading.local()

    def _served_versions(self) -> list[str]:
        """The versions Triton serves under the model name (one, when the config pins it)."""
        metadata = self._call(
            lambda: self.client.get_model_metadata(self.model_name, client_timeout=self.timeout_s)
        )
        return list(metadata.versions)

    # -- validation --------------------------------------------------------------------------------
    def _check_config(self, config) -> None:
        want_dtype = _TRITON_DTYPES[self.input_dtype][0]
        inputs = {i.name: i for i in config.input}
        outputs = {o.name: o for o in config.output}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise InvalidArgument(
                f"{self.where}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                f"model has {sorted(inputs)} -> {sorted(outputs)}"
            )
        from tritonclient.grpc import model_config_pb2 as mc

        got_dtype = mc.DataType.Name(inputs[INPUT_NAME].data_type)
        if got_dtype != want_dtype:
            raise InvalidArgument(
                f"{self.where}: input dtype is {got_dtype}, embedder was asked for "
                f"input_dtype={self.input_dtype!r} ({want_dtype})"
            )
        size = self.spec.input_size
        if list(inputs[INPUT_NAME].dims) != [3, size, size]:
            raise InvalidArgument(
                f"{self.where}: input dims {list(inputs[INPUT_NAME].dims)} do not match spec "
                f"{self.spec.name!r} ([3, {size}, {size}])"
            )
        if self.spec.embed_dim and list(outputs[OUTPUT_NAME].dims) != [self.spec.embed_dim]:
            raise InvalidArgument(
                f"{self.where}: output dims {list(outputs[OUTPUT_NAME].dims)} do not match "
                f"spec embed_dim {self.spec.embed_dim}"
            )
        if config.max_batch_size and self.batch_size > config.max_batch_size:
            raise InvalidArgument(
                f"{self.where}: batch_size {self.batch_size} exceeds the model's "
                f"max_batch_size {config.max_batch_size}"
            )

    def _to_transport(self, images: np.ndarray) -> np.ndarray:
        """Validate [N, 3, S, S] and convert to the transport dtype without changing pixel values."""
        size = self.spec.input_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise InvalidArgument(
                f"{self.where}: expected images [N, 3, {size}, {size}], got {list(images.shape)}"
            )
        dtype = _TRITON_DTYPES[self.input_dtype][1]
        if images.dtype == dtype:
            return images
        if dtype == np.uint8:
            if images.size and (
                images.min() < 0 or images.max() > 255 or not np.array_equal(images, np.rint(images))
            ):
                raise InvalidArgument(
                    f"{self.where}: float images must hold integer pixel values 0..255 to travel as uint8"
                )
            return images.astype(np.uint8)
        return images.astype(np.float32)


def _numpy_to_triton(dtype: np.dtype) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(np.dtype(dtype))


def make_triton_embedder(
    backbone: BackboneSpec | str,
    url: str = "127.0.0.1:8001",
    model_name: str | None = None,
    batch_size: int = 32,
    concurrency: int = 4,
    timeout_s: float = 60.0,
    retries: int = 3,
    shared_memory: bool = False,
    input_dtype: str = "uint8",
    embedder_variant: str = "onnx",
    retry_window_s: float = SERVICE_RETRY_WINDOW_S,
    service_key: str = "",
    **_: Any,
) -> TritonEmbedder:
    return TritonEmbedder(
        backbone,
        url=url,
        model_name=model_name,
        batch_size=batch_size,
        concurrency=concurrency,
        timeout_s=timeout_s,
        retries=retries,
        shared_memory=shared_memory,
        input_dtype=input_dtype,
        embedder_variant=embedder_variant,
        retry_window_s=retry_window_s,
        service_key=service_key,
    )
