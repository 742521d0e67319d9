"""Settings with one precedence rule: CLI > environment (BOBENCH_*) > file (bobench.yaml) > defaults.

Each process builds its settings once, at its edge (the `bob` command, the evaluator and scheduler
services, the embedder service, a Job's entrypoint), and passes them down; library code takes what
it needs as parameters and never reads the environment. A battle spec's `settings:` rank like the
file (just above it). Field `x` of a settings class is env BOBENCH_X and file key `x`; a value that
does not parse, or an unknown file key, is an InvalidArgument naming the variable, key or flag (the
CLI's config-error exit code, no traceback).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bobench.errors import InvalidArgument

log = logging.getLogger(__name__)
ENV_PREFIX = "BOBENCH_"
CONFIG_FILE_ENV = "BOBENCH_CONFIG"
# A credential nobody filled in (an unfilled deployment Secret); the minio-setup Job refuses it too.
PLACEHOLDER = re.compile(r"change[-_ ]?me|placeholder|^x+$|^<.*>$", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Field `x` is set by env BOBENCH_X or key `x` of the config file."""

    cache_dir: str = str(Path.home() / ".cache" / "bobench")  # features, exported models
    embedder: str = (
        "onnxruntime"  # a runtime of bobench.embed.EMBEDDERS (built in: onnxruntime, torch, triton)
    )
    triton_url: str = "127.0.0.1:8001"  # gRPC address of the Triton embedder
    batch_size: int = 32
    threads: int = 0  # intra-op threads; 0 = library default
    device: str = "cpu"  # torch device: cpu, cuda, cuda:1 ("gpu" = cuda); CUDA must be present
    log_level: str = "INFO"
    recompute_features: bool = False  # ignore cached features: each is computed again (`--recompute`)
    store: str = ""  # artifact store URL: "" (local files) or s3://bucket/prefix
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_secure: bool = False
    # Data roots (bobench.data.roots): local folders that client-supplied paths (datasets, weights) may
    # point into besides cache_dir; env BOBENCH_DATA_ROOTS is os.pathsep-separated. Services without
    # them read only cache_dir; the local CLI without them is unrestricted. allow_torchhub: let
    # `torchhub` backbones run their hub repository's code.
    data_roots: tuple[str, ...] = ()
    allow_torchhub: bool = False
    # Model publishing (bobench.serving.publish): the S3 Triton model repository runs are published
    # to before dispatch ("" = off), the layout target, and the key that unlocks Triton model control.
    publish_to: str = ""
    publish_target: str = "local"  # "local" | "cluster-gpu" | "cluster-cpu"
    triton_admin_key: str = ""
    # The key that unlocks Triton inference and metadata (evaluators; the embedder service restricts
    # them with it when set). Secret: never in to_dict.
    triton_service_key: str = ""
    # Fault tolerance (bobench.battle.scheduler, grpc_executor, the evaluator service): finished results
    # in the store are signed with `result_signing_key` (HMAC-SHA256, "" = unsigned, never logged);
    # transient run failures are retried for `retry_window_s` with backoff capped at
    # `retry_max_backoff_s`; an evaluator that failed `breaker_failures` calls in a row is skipped for
    # `breaker_cooldown_s`; one protocol run may take at most `max_run_s` on an evaluator.
    result_signing_key: str = ""
    retry_window_s: int = 120
    retry_max_backoff_s: int = 15
    breaker_failures: int = 3
    breaker_cooldown_s: int = 10
    max_run_s: int = 3600
    # Decoded, resized model inputs kept in memory while a later backbone of the battle with the same
    # preprocessing (or the run's own corruption sweep) reads them again (bobench.embed.input_cache).
    input_cache_mb: int = 1024  # 0 = off
    # Input bounds and limits (bobench.safe_parse, battle.spec, the services): a document beyond a
    # parse bound is INVALID_ARGUMENT; a request beyond a quota is RESOURCE_EXHAUSTED; both messages
    # name the limit and its setting. Battles in flight are counted per caller identity.
    max_json_bytes: int = 1 << 20  # one config_json / ref_json / spec_json field
    max_json_depth: int = 64  # nesting of JSON, YAML and Struct values
    max_spec_bytes: int = 1 << 20  # one YAML battle spec
    max_yaml_alias_expansions: int = 10_000  # nodes aliases may add to a YAML document
    max_name_length: int = 256  # battle, spec, backbone and dataset names; battle ids are <= 128
    max_batch_size: int = 4096  # embedding batch size a request or spec may ask for
    max_runs_per_battle: int = 10_000
    max_battles_in_flight: int = 100  # queued or running battles per identity
    max_images_per_dataset: int = 5_000_000
    max_list_page_bytes: int = 4 << 20  # ListBattles answers at most this much per page
    # Authentication (bobench.rpc.auth). Servers: auth is on when a tokens file, a JWKS file or a TLS
    # certificate is set; tls_ca makes them require client certificates (mTLS). Clients: the token
    # (or a file holding it) and, for TLS, tls_ca plus their own certificate and key.
    auth_tokens_file: str = ""  # JSON lines {identity, roles, sha256}; `bob auth token` appends
    auth_jwks_file: str = ""  # OIDC/JWT: public keys; needs auth_jwt_issuer and auth_jwt_audience
    auth_jwt_issuer: str = ""
    auth_jwt_audience: str = ""
    auth_roles_claim: str = "roles"
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    auth_token: str = ""  # secret: never in to_dict
    auth_token_file: str = ""
    tls_client_cert: str = ""
    tls_client_key: str = ""
    tls_server_name: str = ""  # name checked in the server certificate instead of the address's host
    # Host price per hour by device kind (bobench.analysis.costs): throughput becomes cost per million
    # images in the report and the advice. File: a mapping {cpu: 0.10, nvidia-h200: 4.0}; env
    # BOBENCH_PRICE_PER_HOUR: "cpu=0.10,nvidia-h200=4.0". Keys match a run's recorded device.
    # hash=False: Settings is a cache key (e.g. per-settings S3 clients); a dict cannot be hashed
    price_per_hour: dict[str, float] = field(default_factory=dict, hash=False)
    # A read-only folder of wheels baked into an image (bobench.data.detection_bundled): the deepforest
    # wheel behind tree_crowns is read there when the cache lacks it (a Job pod has no package index).
    image_wheels: str = "/opt/bobench/wheels"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("s3_secret_key", None)
        d.pop("triton_admin_key", None)
        d.pop("triton_service_key", None)
        d.pop("result_signing_key", None)
        d.pop("auth_token", None)
        return d


_TYPE_WORDS = {"int": "an integer", "bool": "true or false", "str": "a string"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _coerce(field: dataclasses.Field, raw: Any, origin: str) -> Any:
    """`raw` (a YAML value, an environment string or a flag) as the field's type; an InvalidArgument
    naming `origin` (the variable, the file key or the flag) and what was expected, never a traceback."""
    typ = field.type if isinstance(field.type, str) else field.type.__name__
    optional = typ.endswith("| None")
    base = typ.removesuffix("| None").strip()
    if optional and (raw is None or (isinstance(raw, str) and not raw.strip())):
        return None
    try:
        if base == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise TypeError("not an integer")
            return int(raw)
        if base == "bool":
            if isinstance(raw, bool):
                return raw
            word = str(raw).strip().lower()
            if word not in _TRUE + _FALSE:
                raise ValueError("not a boolean")
            return word in _TRUE
        if base.startswith("tuple"):
            return _string_list(raw)
        if base.startswith("dict"):
            return _price_table(raw)
        if isinstance(raw, dict | list):
            raise TypeError("not a string")
        return str(raw)
    except (TypeError, ValueError) as exc:
        expected = _TYPE_WORDS.get(base)
        if expected is None:  # lists and price tables: their own parse error says what was wrong
            what = "a list of strings" if base.startswith("tuple") else "a price table (kind: price per hour)"
            expected = f"{what} ({exc})"
        raise InvalidArgument(f"{origin}: expected {expected}, got {raw!r}") from None


def _string_list(raw: Any) -> tuple[str, ...]:
    """A list setting: a YAML list of strings, or one string split at os.pathsep (env)."""
    items = raw.split(os.pathsep) if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise TypeError("not a list of strings")
    return tuple(i.strip() for i in items if i.strip())


def _price_table(raw: Any) -> dict[str, float]:
    """A price mapping: a YAML mapping, or "kind=price,kind=price" (env); prices finite and >= 0."""
    if isinstance(raw, str):
        pairs = [item.split("=", 1) for item in raw.split(",") if item.strip()]
        if not all(len(p) == 2 for p in pairs):
            raise ValueError("expected kind=price pairs separated by commas")
        raw = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(raw, dict):
        raise TypeError("not a mapping")
    table = {}
    for kind, price in raw.items():
        if isinstance(price, bool) or not str(kind).strip():
            raise ValueError(f"bad entry {kind!r}: {price!r}")
        value = float(price)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"price of {kind!r} must be a finite number >= 0, got {price!r}")
        table[str(kind).strip().lower()] = value
    return table


@dataclass(frozen=True)
class EvaluatorServiceSettings:
    """The evaluator service's own settings (`bobench.rpc.evaluator_service`): field `x` is env
    BOBENCH_X or file key `x`; its flags (--host, --port, ...) rank above both."""

    evaluator_host: str = "127.0.0.1"  # 0.0.0.0 in containers
    evaluator_port: int = 50051  # 0 = pick
    metrics_port: int | None = None  # Prometheus /metrics; None = off, 0 = pick
    results_dir: str = ""  # "" = CACHE_DIR/evaluator-results
    max_concurrent_runs: int = 1


@dataclass(frozen=True)
class SchedulerServiceSettings:
    """The scheduler service's own settings (`bobench.rpc.scheduler_service`), resolved like Settings."""

    scheduler_host: str = "127.0.0.1"
    scheduler_port: int = 50052
    metrics_port: int | None = None
    evaluators: str = ""  # host:port,... of evaluators; "" = run in the scheduler's process
    runs_per_evaluator: int = 1
    scheduler_concurrency: int = 4  # runs in flight
    job_config: str = ""  # JobConfig YAML: its protocols run as Kubernetes Jobs; "" = no Jobs


@dataclass(frozen=True)
class ClientSettings:
    """Where the CLI's remote commands connect: `bob evaluate --server` and `bob battle ... --server`."""

    evaluator: str = ""  # HOST:PORT of an evaluator; "" = `bob evaluate` runs embedded
    scheduler: str = ""  # HOST:PORT of a scheduler; "" = the local stack's, if one runs


# Every settings object a process may build; a settings file may hold keys of any of them (one file
# serves the CLI and the services), and each takes only its own.
SETTINGS_CLASSES: tuple[type, ...] = (
    Settings,
    EvaluatorServiceSettings,
    SchedulerServiceSettings,
    ClientSettings,
)
# BOBENCH_* variables that are not settings fields (read by the entry points that own them); any other
# BOBENCH_* name close to a setting's variable is reported as a likely typo.
OTHER_ENV_NAMES = frozenset(
    {
        CONFIG_FILE_ENV,
        "BOBENCH_PLUGINS",
        "BOBENCH_JOB_PLAN",
        "BOBENCH_JOB_BACKBONE",
        "BOBENCH_BUCKET",
        "BOBENCH_TRITON_MODELS_PREFIX",
    }
)
SettingsT = TypeVar("SettingsT")


def setting_keys() -> set[str]:
    """Every key a settings file may hold (the fields of SETTINGS_CLASSES)."""
    return {f.name for cls in SETTINGS_CLASSES for f in dataclasses.fields(cls)}


def env_names() -> set[str]:
    """Every BOBENCH_* variable bobench reads: one per settings field, plus OTHER_ENV_NAMES."""
    return {ENV_PREFIX + key.upper() for key in setting_keys()} | OTHER_ENV_NAMES


def _did_you_mean(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def settings_file_path(config_file: str | os.PathLike | None = None) -> Path | None:
    """The settings file in effect: `config_file`, else $BOBENCH_CONFIG, else ./bobench.yaml if present."""
    path = config_file or os.environ.get(CONFIG_FILE_ENV)
    if path is None and Path("bobench.yaml").exists():
        path = "bobench.yaml"
    return Path(path) if path else None


def read_settings_file(config_file: str | os.PathLike | None = None) -> tuple[dict[str, Any], str]:
    """(the settings file's mapping, its name); ({}, "") without a file. Unknown keys are refused
    with a did-you-mean, so a typo never silently falls back to a default."""
    import yaml

    p = settings_file_path(config_file)
    if p is None:
        return {}, ""
    if not p.is_file():
        hint = ""
        if str(p).lstrip().startswith(("{", "[")):  # a JSON document where a file name belongs
            hint = " (--config names the settings file; a protocol config goes in --protocol-config)"
        raise InvalidArgument(f"config file {p} does not exist{hint}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"config file {p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"config file {p}: expected a mapping at the top level")
    known = setting_keys()
    for key in data:
        if key not in known:
            hint = _did_you_mean(str(key), known) or (
                "; this is the settings file (a fine-tune recipe goes in `bob finetune --recipe FILE`)"
            )
            raise InvalidArgument(f"config file {p}: unknown setting {key!r}{hint}")
    return data, str(p)


def resolve_settings(
    cls: type[SettingsT],
    config_file: str | os.PathLike | None = None,
    *,
    spec: Mapping[str, Any] | None = None,
    **cli: Any,
) -> SettingsT:
    """One settings object of `cls` by the one precedence rule: `cli` (flags given; None = not given)
    > environment BOBENCH_<FIELD> > `spec` (a battle spec's `settings:`) > the settings file's key
    <field> > the field's default. Raises InvalidArgument naming the variable, key or flag whose
    value does not parse."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    data, origin = read_settings_file(config_file)
    for key, raw in data.items():
        if key in fields:
            values[key] = _coerce(fields[key], raw, f"config file {origin}: {key}")
    for key, raw in (spec or {}).items():
        if raw is not None:
            if key not in fields:
                raise InvalidArgument(
                    f"spec settings: unknown setting {key!r}{_did_you_mean(key, set(fields))}"
                )
            values[key] = _coerce(fields[key], raw, f"spec settings.{key}")
    for name, f in fields.items():
        env = os.environ.get(ENV_PREFIX + name.upper())
        if env is not None:
            values[name] = _coerce(f, env, ENV_PREFIX + name.upper())
    for name, raw in cli.items():
        if raw is not None:
            if name not in fields:
                raise InvalidArgument(f"unknown setting {name!r}{_did_you_mean(name, set(fields))}")
            values[name] = _coerce(fields[name], raw, f"--{name.replace('_', '-')}")
    return cls(**values)


def warn_unknown_env(environ: dict[str, str] | None = None) -> list[str]:
    """Log a warning for each BOBENCH_* variable that bobench does not read but that is close to one
    it does (a typo such as BOBENCH_CAHCE_DIR); returns the warnings."""
    known = env_names()
    env = os.environ if environ is None else environ
    warnings = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            hint = _did_you_mean(name, known)
            if hint:
                warnings.append(f"{name} is not a bobench setting{hint}")
                log.warning("%s", warnings[-1])
    return warnings


def load_settings(
    config_file: str | os.PathLike | None = None,
    *,
    spec: Mapping[str, Any] | None = None,
    runtimes: Collection[str] | None = None,
    **cli: Any,
) -> Settings:
    """Resolve the process's Settings (see `resolve_settings`) and check their values. `runtimes`:
    the embedder runtimes this process can run (`bobench.embed.runtime_names()`, after plugins are
    loaded); None skips that check (the names live in the embed layer, above this one)."""
    warn_unknown_env()
    settings = resolve_settings(Settings, config_file, spec=spec, **cli)
    _check(settings, runtimes)
    return settings


def _check(s: Settings, runtimes: Collection[str] | None = None) -> None:
    if s.batch_size <= 0:
        raise InvalidArgument(f"batch_size must be a positive integer, got {s.batch_size}")
    if s.threads < 0:
        raise InvalidArgument(f"threads must be >= 0 (0 = library default), got {s.threads}")
    if s.input_cache_mb < 0:
        raise InvalidArgument(f"input_cache_mb must be >= 0 (0 = off), got {s.input_cache_mb}")
    if runtimes is not None and s.embedder not in runtimes:
        raise InvalidArgument(
            f"embedder must be one of {', '.join(sorted(runtimes))}, got {s.embedder!r}"
            f"{_did_you_mean(s.embedder, set(runtimes))}"
        )
    _check_not_placeholder(s)


def check_device(device: str, *, cuda_available: Callable[[], bool] | None = None) -> str:
    """The torch device to use for `device` ("gpu" means "cuda"). Raises InvalidArgument for a CUDA
    device on a machine without CUDA: a run asked for the GPU must not quietly train on the CPU.
    `cuda_available` defaults to torch's check (imported only for a non-CPU device)."""
    wanted = device.strip().lower()
    if wanted == "gpu":
        wanted = "cuda"
    if wanted == "cpu" or not wanted.startswith("cuda"):
        return wanted or "cpu"
    if cuda_available is None:
        try:
            import torch
        except ImportError:
            raise InvalidArgument(f"device {device!r}: torch is not installed in this process") from None
        cuda_available = torch.cuda.is_available
    if not cuda_available():
        raise InvalidArgument(
            f"device {device!r} asked for, but CUDA is not available on this machine "
            "(torch.cuda.is_available() is False); use --device cpu (setting device, env BOBENCH_DEVICE)"
        )
    return wanted


def _check_not_placeholder(s: Settings) -> None:
    """Refuse known placeholder credentials (an unfilled deployment Secret) at start, naming the variable."""
    for name in ("s3_access_key", "s3_secret_key", "triton_admin_key", "triton_service_key"):
        if PLACEHOLDER.search(getattr(s, name)):
            raise InvalidArgument(
                f"{ENV_PREFIX}{name.upper()}: looks like a placeholder credential; generate real ones "
                "with `make deploy-secrets` (deploy/secrets/secrets.env)"
            )
