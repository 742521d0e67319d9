"""Loaders for official checkpoint files that need their own handling (not a timm/torchvision/hub model).

- `moco_v3`: the official MoCo v3 pretraining checkpoints (`*.pth.tar`) hold the whole training state
  (base encoder with its projection MLP, momentum encoder, predictor); only the base encoder's trunk
  is loaded, strictly, into the matching timm architecture.
- `torchscript`: a TorchScript file (SSCD copy-detection models ship only as such).
- `diffusers_sd`: the Stable Diffusion v1 encoder as BoB uses it (VAE encoder, then the U-Net's input
  conv, down blocks and mid block at timestep 0 under a fixed text prompt; global-average-pooled).

Weights are `hub` (the official URL, cached in torch hub's checkpoint folder / the Hugging Face
cache), a local path, or `s3://` through the artifact store. Offline, a hub spec whose file is not
cached raises Unavailable naming what to download and where to put it. diffusers and transformers
are imported only when a `diffusers_sd` backbone is created.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bobench.backbones.factory import LoadedBackbone
from bobench.backbones.sources_torch import _finish
from bobench.backbones.spec import BackboneSpec
from bobench.backbones.weights import (
    hf_cache_dir,
    load_state_dict_strict,
    read_state_dict,
    resolve_weights_file,
    state_dict_digest,
    verify_declared_digest,
    weights_file_digest,
)
from bobench.data.roots import check_path
from bobench.errors import InvalidArgument, Unavailable
from bobench.hashing import sha256_file

log = logging.getLogger(__name__)

MOCO_V3_BASE_PREFIXES = ("module.base_encoder.", "base_encoder.")
MOCO_V3_TRAINING_PREFIXES = (
    "module.momentum_encoder.",
    "momentum_encoder.",
    "module.predictor.",
    "predictor.",
)
SD_PIP_HINT = "pip install diffusers transformers"
SD_SUBFOLDERS = ("vae", "unet", "text_encoder", "tokenizer")


def _no_random(spec: BackboneSpec) -> None:
    if spec.weights == "random":
        raise InvalidArgument(
            f"backbone {spec.name!r}: source {spec.source!r} loads pretrained checkpoints only; "
            "use source 'timm' for a random-init baseline"
        )


def hub_checkpoint_path(spec: BackboneSpec) -> Path:
    """The official checkpoint of a hub spec, downloaded once into torch hub's checkpoint folder.

    Uses extra["checkpoint_url"] and extra["checkpoint_file"]; the cached file is where
    `weights_available` looks. Raises InvalidArgument when the spec lacks them and Unavailable when the
    download fails, saying which URL to fetch and where to put the file.
    """
    url, file_name = spec.extra.get("checkpoint_url"), spec.extra.get("checkpoint_file")
    if not url or not file_name:
        raise InvalidArgument(
            f"backbone {spec.name!r}: hub weights need extra['checkpoint_url'] and extra['checkpoint_file']"
        )
    dest = Path(torch.hub.get_dir()) / "checkpoints" / str(file_name)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(str(url), str(dest), progress=False)
    except Exception as exc:  # urllib, ssl, socket and http errors all mean "no usable network"
        raise Unavailable(
            f"backbone {spec.name!r}: could not download {url} ({type(exc).__name__}: {exc}); "
            f"download it and put it at {dest}, or set weights=<local file or s3:// URL>"
        ) from exc
    return dest


def _checkpoint_path(spec: BackboneSpec) -> Path:
    """The checkpoint file; a local one is checked against a declared weights_sha256 before it is read."""
    if spec.weights == "hub":
        return hub_checkpoint_path(spec)
    path = resolve_weights_file(spec)
    verify_declared_digest(spec, weights_file_digest(path))
    return path


def moco_v3_backbone_state(
    state: dict[str, torch.Tensor], head_prefix: str, spec: BackboneSpec, origin: str
) -> dict[str, torch.Tensor]:
    """The base encoder's trunk from a MoCo v3 checkpoint, keys in timm naming.

    Keeps `[module.]base_encoder.*` minus its projection MLP (`head_prefix`: "head." for ViT, "fc."
    for ResNet); drops the momentum encoder and predictor. Any other key means the file is not a
    MoCo v3 pretraining checkpoint and raises InvalidArgument naming the key and `origin`.
    """
    kept: dict[str, torch.Tensor] = {}
    dropped = 0
    for key, value in state.items():
        base = next((p for p in MOCO_V3_BASE_PREFIXES if key.startswith(p)), None)
        if base is not None:
            trunk_key = key[len(base) :]
            if trunk_key.startswith(head_prefix):
                dropped += 1
            else:
                kept[trunk_key] = value
        elif key.startswith(MOCO_V3_TRAINING_PREFIXES):
            dropped += 1
        else:
            raise InvalidArgument(
                f"backbone {spec.name!r}: {origin} key {key!r} is neither the base encoder, the momentum "
                "encoder nor the predictor; expected a MoCo v3 pretraining checkpoint"
            )
    if not kept:
        raise InvalidArgument(
            f"backbone {spec.name!r}: {origin} has no 'module.base_encoder.' trunk keys "
            "(a linear-eval checkpoint instead of the pretraining one?)"
        )
    log.debug(
        "%s: %d base-encoder tensors kept, %d head/momentum/predictor dropped", origin, len(kept), dropped
    )
    return kept


def load_moco_v3(spec: BackboneSpec, cache_dir: Path | None = None) -> LoadedBackbone:
    """MoCo v3 base encoder in timm `spec.model_id` (num_classes=0) with extra["timm_kwargs"].

    The feature is timm's pooled output: the class token after the final norm for ViT (what MoCo v3's
    linear evaluation reads), global average pooling for ResNet. The digest is the checkpoint's sha256.
    """
    import timm

    _no_random(spec)
    kwargs: dict[str, Any] = dict(spec.extra.get("timm_kwargs", {}))
    try:
        model = timm.create_model(spec.model_id, pretrained=False, num_classes=0, **kwargs)
    except (RuntimeError, TypeError) as exc:  # unknown model / unknown kwarg
        raise InvalidArgument(f"backbone {spec.name!r}: {exc}") from exc
    head_prefix = str(model.pretrained_cfg.get("classifier", "head")) + "."
    path = _checkpoint_path(spec)
    state = moco_v3_backbone_state(read_state_dict(path, spec), head_prefix, spec, origin=str(path))
    load_state_dict_strict(model, state, spec, origin=str(path))
    return _finish(spec, model, sha256_file(path), None)


def load_torchscript(spec: BackboneSpec, cache_dir: Path | None = None) -> LoadedBackbone:
    """A TorchScript model file whose output is the feature (SSCD: 512-d, already L2-normalised).

    The returned module is the PreprocessingWrapper *scripted* around the loaded network: the legacy
    ONNX exporter traces plain modules and refuses a loaded ScriptModule inside a trace ("not part of
    the active trace"), but exports a ScriptModule from its graph. The digest is the file's sha256.
    A file torch.jit cannot read, or a network that cannot be scripted into the wrapper, raises
    InvalidArgument.
    """
    _no_random(spec)
    path = _checkpoint_path(spec)
    try:
        network = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch.jit raises RuntimeError or pickle/zip errors for a bad file
        raise InvalidArgument(f"backbone {spec.name!r}: cannot read TorchScript file {path}: {exc}") from exc
    loaded = _finish(spec, network, sha256_file(path), None)
    try:
        loaded.module = torch.jit.script(loaded.module)
    except Exception as exc:  # torch.jit frontend errors have no common base class
        raise InvalidArgument(
            f"backbone {spec.name!r}: TorchScript network in {path} does not fit the preprocessing wrapper: {exc}"
        ) from exc
    return loaded


class StableDiffusionEncoder(nn.Module):
    """Stable Diffusion v1 as a feature extractor (BoB's generative backbone).

    Input: images normalised to [-1, 1] (spec mean = std = 0.5). The VAE encoder's latent mean is
    scaled by the VAE's scaling factor (0.18215 for v1), then the U-Net's conv_in, down blocks and mid
    block run at a fixed timestep (0) with a fixed text embedding (the CLIP text encoder's output for
    the prompt, computed once at load and kept as a buffer). Returns the global-average-pooled
    mid-block output [N, C] (C = 1280 for v1). The U-Net's up blocks and the VAE decoder are not kept.
    """

    def __init__(
        self, vae: nn.Module, unet: nn.Module, text_embedding: torch.Tensor, timestep: int = 0
    ) -> None:
        super().__init__()
        unsupported = [
            name
            for name, present in (
                ("class_embedding", getattr(unet, "class_embedding", None) is not None),
                ("add_embedding", getattr(unet, "add_embedding", None) is not None),
                ("encoder_hid_proj", getattr(unet, "encoder_hid_proj", None) is not None),
                ("time_embed_act", getattr(unet, "time_embed_act", None) is not None),
                ("center_input_sample", bool(unet.config.get("center_input_sample", False))),
            )
            if present
        ]
        if unsupported:
            raise InvalidArgument(
                f"Stable Diffusion encoder supports v1-style U-Nets only; this one has {unsupported}"
            )
        if text_embedding.ndim != 3 or text_embedding.shape[0] != 1:
            raise InvalidArgument(
                f"text embedding must be [1, tokens, dim], got {list(text_embedding.shape)}"
            )
        self.vae_encoder = vae.encoder
        self.quant_conv = vae.quant_conv if getattr(vae, "quant_conv", None) is not None else nn.Identity()
        self.latent_scale = float(vae.config.get("scaling_factor", 0.18215))
        self.time_proj = unet.time_proj
        self.time_embedding = unet.time_embedding
        self.conv_in = unet.conv_in
        self.down_blocks = unet.down_blocks
        self.mid_block = unet.mid_block
        self.register_buffer("text_embedding", text_embedding.detach().to(torch.float32).clone())
        self.register_buffer("timestep", torch.tensor([timestep], dtype=torch.int64))

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latent mean [N, 4, H/8, W/8] (what `vae.encode(x).latent_dist.mean * scale` gives)."""
        moments = self.quant_conv(self.vae_encoder(images))
        return moments[:, : moments.shape[1] // 2] * self.latent_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.latents(images)
        n = h.shape[0]
        emb = self.time_embedding(self.time_proj(self.timestep).to(h.dtype)).expand(n, -1)
        context = self.text_embedding.to(h.dtype).expand(n, -1, -1)
        h = self.conv_in(h)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=context)
            else:
                h, _ = block(hidden_states=h, temb=emb)
        if getattr(self.mid_block, "has_cross_attention", False):
            h = self.mid_block(h, emb, encoder_hidden_states=context)
        else:
            h = self.mid_block(h, emb)
        return h.mean(dim=(2, 3))


def prompt_embedding(tokenizer: Any, text_encoder: nn.Module, prompt: str = "") -> torch.Tensor:
    """The CLIP text encoder's last hidden state [1, 77, D] for `prompt`, padded as SD pipelines pad it."""
    tokens = tokenizer(
        [prompt],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        return text_encoder(tokens.input_ids)[0]


def _import_sd_packages(spec: BackboneSpec) -> tuple[Any, Any]:
    try:
        return importlib.import_module("diffusers"), importlib.import_module("transformers")
    except ModuleNotFoundError:
        raise Unavailable(
            f"backbone {spec.name!r} (source {spec.source!r}) needs the optional packages diffusers and "
            f"transformers; `{SD_PIP_HINT}`"
        ) from None


def _extracted_archive(archive: Path, digest: str, cache_dir: Path, spec: BackboneSpec) -> Path:
    """Unpack a .tar of a diffusers directory once into cache_dir, keyed by its sha256; return the root."""
    if not tarfile.is_tarfile(archive):
        raise InvalidArgument(
            f"backbone {spec.name!r}: {archive} is neither a diffusers directory nor a .tar of one"
        )
    dest = cache_dir / "diffusers_sd" / digest[:16]
    if not dest.is_dir():  # unpack beside it, then rename: a reader never sees a half-unpacked tree
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(partial, filter="data")
            partial.replace(dest)
        except OSError:
            if not dest.is_dir():  # not a concurrent unpack that won the rename: a real failure
                raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    if (dest / "unet").is_dir():
        return dest
    inner = [p for p in dest.iterdir() if (p / "unet").is_dir()]
    if len(inner) != 1:
        raise InvalidArgument(
            f"backbone {spec.name!r}: {archive} holds no diffusers directory with {SD_SUBFOLDERS}"
        )
    return inner[0]


def _sd_root(spec: BackboneSpec, cache_dir: Path) -> tuple[str, str | None]:
    """Where from_pretrained reads (hub repo id or local directory) and the archive digest, if any."""
    if spec.weights == "hub":
        return spec.model_id, None
    local = Path(spec.weights).expanduser()
    if not spec.weights.startswith(("s3://", "package:")):
        check_path(local, f"backbone {spec.name!r}: weights {local}")
        if local.is_dir():
            return str(local), None
    archive = resolve_weights_file(spec)
    digest = sha256_file(archive)
    verify_declared_digest(spec, digest)
    return str(_extracted_archive(archive, digest, cache_dir, spec)), digest


def load_diffusers_sd(spec: BackboneSpec, cache_dir: Path | None = None) -> LoadedBackbone:
    """Stable Diffusion v1 encoder from a diffusers layout (vae/, unet/, text_encoder/, tokenizer/).

    weights: "hub" (spec.model_id on the Hugging Face hub or in its cache), a local diffusers directory,
    or a .tar of one (local path or s3://). extra["prompt"] (default "") and extra["timestep"]
    (default 0) fix the conditioning. The digest is the archive's sha256, else the state-dict digest.
    Raises Unavailable (packages missing, hub unreachable) or InvalidArgument (bad local layout).
    """
    _no_random(spec)
    diffusers, transformers = _import_sd_packages(spec)
    root, digest = _sd_root(spec, Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp()))
    classes = {
        "vae": diffusers.AutoencoderKL,
        "unet": diffusers.UNet2DConditionModel,
        "text_encoder": transformers.CLIPTextModel,
        "tokenizer": transformers.CLIPTokenizer,
    }
    parts: dict[str, Any] = {}
    for subfolder, cls in classes.items():
        try:
            parts[subfolder] = cls.from_pretrained(root, subfolder=subfolder)
        except Exception as exc:  # hub, file-system and config errors come in many types
            if spec.weights != "hub":
                raise InvalidArgument(
                    f"backbone {spec.name!r}: cannot load {subfolder}/ from {root}: {exc}"
                ) from exc
            raise Unavailable(
                f"backbone {spec.name!r}: could not get {root} ({subfolder}) from the Hugging Face hub "
                f"({type(exc).__name__}: {exc}); download it with `hf download {root} --include "
                f"'vae/*' 'unet/*' 'text_encoder/*' 'tokenizer/*'` into the Hugging Face cache "
                f"({hf_cache_dir()}), or set weights=<a local diffusers directory, or a .tar of one (path or s3://)>"
            ) from exc
    embedding = prompt_embedding(parts["tokenizer"], parts["text_encoder"], str(spec.extra.get("prompt", "")))
    network = StableDiffusionEncoder(
        parts["vae"], parts["unet"], embedding, int(spec.extra.get("timestep", 0))
    )
    return _finish(spec, network, digest or state_dict_digest(network), None)
