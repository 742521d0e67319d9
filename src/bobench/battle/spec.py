"""Battle specs: backbones x datasets x protocols x seeds, parsed from YAML with field-named errors.

An unknown field (top level, a protocol entry, a user-defined backbone, `settings`, `recommend`) is
refused with the close match it was probably meant to be ("unknown field 'protocls' (did you mean
'protocols'?)"); `load_spec` prefixes every error with the spec's file.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bobench.config import Settings
from bobench.errors import InvalidArgument
from bobench.safe_parse import DEFAULT_LIMITS, check_plain, limit_hint, load_yaml

_TOP_LEVEL = {
    "name",
    "description",
    "backbones",
    "datasets",
    "protocols",
    "seeds",
    "embedder",
    "embedder_variant",
    "settings",
    "report",
    "recommend",
}
# the report's recommendation limits a spec may set (`bobench.analysis.recommend` keyword arguments)
_RECOMMEND = {"max_latency_ms", "max_params", "max_served_latency_ms", "max_flops", "max_cost_per_million",
              "max_served_cost_per_million", "min_server_qps", "max_server_p99_ms"}  # fmt: skip
_SETTINGS = {"batch_size", "threads", "cache_dir", "triton_url", "device"}
MAX_SEED = 2**63 - 1  # seeds travel as int64 (RunRequest.seed, RunResult.seed)


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset as the spec names it: `name` labels results, `ref` is what `load_dataset` takes."""

    name: str
    ref: str | dict[str, Any]

    def ref_json(self) -> str:
        return json.dumps(self.ref, sort_keys=True)


@dataclass(frozen=True)
class ProtocolEntry:
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] | None = None  # restrict to these dataset names (None = all)
    backbones: tuple[str, ...] | None = None  # restrict to these backbones (None = all)


@dataclass(frozen=True)
class BattleSpec:
    name: str
    backbones: tuple[str, ...]
    datasets: tuple[DatasetEntry, ...]
    protocols: tuple[ProtocolEntry, ...]
    seeds: tuple[int, ...] = (0,)
    embedder: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    report: bool = True
    description: str = ""
    custom_backbones: tuple[dict[str, Any], ...] = ()  # BackboneSpec fields of user-defined backbones
    # Which published Triton model embeds: "onnx" (default), "trt-fp16" or "trt-fp32". Part of the run
    # key of embedding runs (TensorRT fp16 changes the numbers) and of their feature cache.
    embedder_variant: str = "onnx"
    recommend: dict[str, float] = field(default_factory=dict)  # the report's recommendation limits

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "backbones": [
                next((c for c in self.custom_backbones if c["name"] == b), b) for b in self.backbones
            ],
            "datasets": [{"name": d.name, "ref": d.ref} for d in self.datasets],
            "protocols": [
                {
                    "name": p.name,
                    "config": p.config,
                    **({"datasets": list(p.datasets)} if p.datasets else {}),
                    **({"backbones": list(p.backbones)} if p.backbones else {}),
                }
                for p in self.protocols
            ],
            "seeds": list(self.seeds),
            "embedder": self.embedder,
            "settings": self.settings,
            "report": self.report,
            # only when chosen, so specs stored before the field existed compare equal
            **({"embedder_variant": self.embedder_variant} if self.embedder_variant != "onnx" else {}),
            **({"recommend": dict(self.recommend)} if self.recommend else {}),
        }


def _fail(where: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"battle spec: {where}: {message}")


def unknown_fields(unknown: set[str] | list[str], allowed: set[str] | list[str], what: str = "field") -> str:
    """ "unknown field 'protocls' (did you mean 'protocols'?); allowed: ..." for the keys in `unknown`."""
    choices = sorted(allowed)
    named = []
    for key in sorted(unknown, key=str):
        close = difflib.get_close_matches(str(key), choices, n=1, cutoff=0.5)  # as the registries
        named.append(f"{str(key)!r} (did you mean {close[0]!r}?)" if close else repr(str(key)))
    plural = "" if len(named) == 1 else "s"
    return f"unknown {what}{plural} {', '.join(named)}; allowed: {', '.join(choices)}"


def _list(data: dict, key: str, required: bool = True) -> list:
    value = data.get(key)
    if value is None:
        if required:
            raise _fail(key, "is required and must be a non-empty list")
        return []
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list) or (required and not value):
        raise _fail(key, f"must be a non-empty list, got {type(value).__name__}")
    return value


def _dataset_entry(item: Any, where: str, base_dir: Path | None) -> DatasetEntry:
    if isinstance(item, str) and item.strip():
        return DatasetEntry(name=item, ref=item)
    if not isinstance(item, dict):
        raise _fail(where, "must be a dataset name or a mapping with 'type' (imagefolder/manifest/...)")
    item = dict(item)
    name = item.pop("name", None)
    ref = item.pop("ref", None)
    if ref is None:
        if "type" not in item:
            raise _fail(where, "a mapping needs 'ref' or 'type'")
        ref = item
    if isinstance(ref, dict) and "path" in ref and base_dir is not None and "://" not in str(ref["path"]):
        path = Path(str(ref["path"])).expanduser()
        ref = {**ref, "path": str(path if path.is_absolute() else (base_dir / path).resolve())}
    if name is None:
        name = ref if isinstance(ref, str) else f"{ref.get('type')}:{Path(str(ref.get('path', ''))).name}"
    if not isinstance(name, str) or not name:
        raise _fail(f"{where}.name", "must be a non-empty string")
    return DatasetEntry(name=name, ref=ref)


def _subset(item: dict, key: str, where: str, allowed: set[str]) -> tuple[str, ...] | None:
    values = item.get(key)
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values:
        raise _fail(f"{where}.{key}", "must be a non-empty list of names")
    missing = [v for v in values if v not in allowed]
    if missing:
        raise _fail(f"{where}.{key}", f"{missing} are not among the spec's {key} {sorted(allowed)}")
    return tuple(values)


def _protocol_entry(
    item: Any, where: str, dataset_names: set[str], backbone_names: set[str]
) -> ProtocolEntry:
    if isinstance(item, str) and item.strip():
        return ProtocolEntry(name=item)
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise _fail(where, "must be a protocol name or a mapping with 'name'")
    unknown = set(item) - _PROTOCOL_FIELDS
    if unknown:
        raise _fail(where, unknown_fields(unknown, _PROTOCOL_FIELDS))
    config = item.get("config") or {}
    if not isinstance(config, dict):
        raise _fail(f"{where}.config", "must be a mapping")
    return ProtocolEntry(
        name=item["name"],
        config=dict(config),
        datasets=_subset(item, "datasets", where, dataset_names),
        backbones=_subset(item, "backbones", where, backbone_names),
    )


_PROTOCOL_FIELDS = {"name", "config", "datasets", "backbones"}
_CUSTOM_REQUIRED = ("name", "source", "model_id")
_CUSTOM_DEFAULTS = {"family": "cnn", "pretraining_method": "other", "pretraining_data": "unknown"}


def custom_backbone_entry(item: dict, where: str, base_dir: Path | None) -> dict[str, Any]:
    """A user-defined backbone: BackboneSpec fields, e.g. {name, source: timm, model_id, weights: ckpt.pth}
    or {name, source: onnx, model_id: model.onnx, output_name, input_size, mean, std}. Relative file
    paths resolve against the spec's folder."""
    from bobench.backbones.spec import BackboneSpec, check_digest_field

    missing = [k for k in _CUSTOM_REQUIRED if not item.get(k)]
    if missing:
        raise _fail(where, f"a custom backbone needs {list(_CUSTOM_REQUIRED)}; missing {missing}")
    import dataclasses

    known = {f.name for f in dataclasses.fields(BackboneSpec)}
    unknown = set(item) - known
    if unknown:
        raise _fail(where, unknown_fields(unknown, known, "BackboneSpec field"))
    check_digest_field(item.get("weights_sha256"), f"battle spec: {where}.weights_sha256")
    entry = {**_CUSTOM_DEFAULTS, **item}
    if (
        entry["source"] == "onnx"
        and entry.get("weights") in (None, "random")
        and str(entry["model_id"]).endswith(".onnx")
    ):
        entry["weights"] = entry["model_id"]  # an ONNX file is its own weights
    if base_dir is not None:
        for key in ("model_id", "weights"):
            value = entry.get(key)
            if isinstance(value, str) and value.endswith((".onnx", ".pth", ".pt", ".safetensors", ".bin")):
                path = Path(value).expanduser()
                entry[key] = str(path if path.is_absolute() else (base_dir / path).resolve())
    return entry


def _check_length(value: Any, where: str, limits: Settings) -> None:
    """A name longer than `max_name_length` is refused (quoting only its start)."""
    if isinstance(value, str) and len(value) > limits.max_name_length:
        raise _fail(
            where,
            f"{value[:40]!r}... is {len(value)} characters, over {limit_hint('max_name_length', limits)}",
        )


def _check_names(data: dict, limits: Settings) -> None:
    """Battle, backbone, dataset and protocol names bounded before anything quotes or stores them."""
    _check_length(data.get("name"), "name", limits)
    for key in ("backbones", "datasets", "protocols"):
        items = data.get(key)
        for i, item in enumerate(items if isinstance(items, list) else [items]):
            _check_length(item, f"{key}[{i}]", limits)
            if isinstance(item, dict):
                _check_length(item.get("name"), f"{key}[{i}].name", limits)
                for sub in ("datasets", "backbones"):
                    values = item.get(sub)
                    for j, v in enumerate(values if isinstance(values, list) else [values]):
                        _check_length(v, f"{key}[{i}].{sub}[{j}]", limits)
    description = data.get("description")
    if isinstance(description, str) and len(description) > limits.max_spec_bytes:
        raise _fail(
            "description", f"is {len(description)} characters, over {limit_hint('max_spec_bytes', limits)}"
        )


def parse_spec(
    data: Any, base_dir: Path | None = None, default_name: str = "battle", limits: Settings | None = None
) -> BattleSpec:
    """Validate a spec mapping; every error names the offending field. The spec must be plain data
    (string keys, finite numbers, nested at most `max_json_depth`); names are bounded by
    `max_name_length`, seeds by int64, `settings.batch_size` by `max_batch_size` (`limits`: the
    settings holding them, default their defaults)."""
    limits = limits or DEFAULT_LIMITS
    if not isinstance(data, dict):
        raise _fail("top level", f"must be a mapping, got {type(data).__name__}")
    check_plain(data, "battle spec", limits)
    _check_names(data, limits)
    unknown = set(data) - _TOP_LEVEL
    if unknown:
        raise _fail("top level", unknown_fields(unknown, _TOP_LEVEL))
    backbones, custom = [], []
    for i, b in enumerate(_list(data, "backbones")):
        if isinstance(b, dict):
            custom.append(custom_backbone_entry(b, f"backbones[{i}]", base_dir))
            b = custom[-1]["name"]
        if not isinstance(b, str) or not b.strip():
            raise _fail(f"backbones[{i}]", "must be a backbone name or a mapping of BackboneSpec fields")
        backbones.append(b)
    if len(set(backbones)) != len(backbones):
        raise _fail("backbones", "contains duplicates")
    datasets = tuple(
        _dataset_entry(d, f"datasets[{i}]", base_dir) for i, d in enumerate(_list(data, "datasets"))
    )
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise _fail("datasets", f"duplicate dataset names {names}")
    protocols = tuple(
        _protocol_entry(p, f"protocols[{i}]", set(names), set(backbones))
        for i, p in enumerate(_list(data, "protocols"))
    )
    seeds = data.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds)
    ):
        raise _fail("seeds", f"must be a non-empty list of integers 0 <= seed < 2**63, got {str(seeds)[:80]}")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise _fail("settings", f"must be a mapping with keys among {sorted(_SETTINGS)}")
    if set(settings) - _SETTINGS:
        raise _fail("settings", unknown_fields(set(settings) - _SETTINGS, _SETTINGS, "setting"))
    bs = settings.get("batch_size")
    if bs is not None and (
        not isinstance(bs, int) or isinstance(bs, bool) or not 0 < bs <= limits.max_batch_size
    ):
        raise _fail(
            "settings.batch_size",
            f"must be an integer 1..{limits.max_batch_size} ({limit_hint('max_batch_size', limits)}), got {bs!r}",
        )
    threads = settings.get("threads")
    if threads is not None and (
        not isinstance(threads, int) or isinstance(threads, bool) or not 0 <= threads <= 1024
    ):
        raise _fail("settings.threads", f"must be an integer 0..1024 (0 = library default), got {threads!r}")
    embedder = data.get("embedder")
    if embedder is not None:
        from bobench.embed import runtime_names  # plugins' runtimes included

        if embedder not in runtime_names():
            raise _fail("embedder", f"must be one of {', '.join(runtime_names())}, got {embedder!r}")
    embedder_variant = _embedder_variant(data.get("embedder_variant", "onnx"))
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise _fail("name", "must be a non-empty string")
    return BattleSpec(
        name=name,
        description=str(data.get("description", "")),
        backbones=tuple(backbones),
        datasets=datasets,
        protocols=protocols,
        seeds=tuple(seeds),
        embedder=embedder,
        settings=dict(settings),
        report=bool(data.get("report", True)),
        custom_backbones=tuple(custom),
        embedder_variant=embedder_variant,
        recommend=_recommend(data.get("recommend") or {}),
    )


def _recommend(value: Any) -> dict[str, float]:
    if isinstance(value, dict) and set(value) - _RECOMMEND:
        raise _fail("recommend", unknown_fields(set(value) - _RECOMMEND, _RECOMMEND, "limit"))
    if not isinstance(value, dict):
        raise _fail("recommend", f"must be a mapping with keys among {sorted(_RECOMMEND)}, got {value!r}")
    for key, bound in value.items():
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not bound >= 0:
            hint = " (YAML reads 1.0e9 as text: write 1.0e+9)" if isinstance(bound, str) else ""
            raise _fail(f"recommend.{key}", f"must be a number >= 0, got {bound!r}{hint}")
    return {k: float(v) for k, v in value.items()}


def _embedder_variant(value: Any) -> str:
    from bobench.export.triton_repo import EMBEDDER_VARIANTS

    if value not in EMBEDDER_VARIANTS:
        raise _fail("embedder_variant", f"must be one of {list(EMBEDDER_VARIANTS)}, got {value!r}")
    return value


def load_spec_yaml(
    text: str | bytes,
    field: str = "spec_yaml",
    *,
    base_dir: Path | None = None,
    default_name: str = "battle",
    limits: Settings | None = None,
) -> BattleSpec:
    """Parse and validate a YAML battle spec given as text, through the bounded safe loader
    (`bobench.safe_parse.load_yaml`: size, depth and alias-expansion limits). Raises InvalidArgument
    naming `field` and, for a bound, the limit and its setting."""
    data = load_yaml(text, field, limits)
    return parse_spec(data, base_dir=base_dir, default_name=default_name, limits=limits)


def load_spec(path: str | Path) -> BattleSpec:
    """Read and validate a YAML battle spec; relative dataset paths resolve against its folder."""
    p = Path(path)
    if not p.is_file():
        raise InvalidArgument(f"battle spec {p} does not exist")
    try:
        return load_spec_yaml(
            p.read_bytes(), f"battle spec {p}", base_dir=p.parent.resolve(), default_name=p.stem
        )
    except InvalidArgument as exc:
        if str(p) in str(exc):  # the YAML loader's errors name the file already
            raise
        message = str(exc).removeprefix("battle spec: ")
        raise InvalidArgument(f"battle spec {p}: {message}") from None
