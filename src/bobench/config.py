"""Settings with one precedence rule: CLI > environment (BOBENCH_*) > file (bobench.yaml) > defaults."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bobench.errors import InvalidArgument

ENV_PREFIX = "BOBENCH_"
CONFIG_FILE_ENV = "BOBENCH_CONFIG"
# A credential nobody filled in (an unfilled deployment Secret); the minio-setup Job refuses it too.
PLACEHOLDER = re.compile(r"change[-_ ]?me|placeholder|^x+$|^<.*>$", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Field `x` is set by env BOBENCH_X or key `x` of the config file."""

    cache_dir: str = str(Path.home() / ".cache" / "bobench")  # features, exported models
    embedder: str = "onnxruntime"  # "onnxruntime" | "torch" | "triton"
    triton_url: str = "127.0.0.1:8001"  # gRPC address of the Triton embedder
    batch_size: int = 32
    threads: int = 0  # intra-op threads; 0 = library default
    device: str = "cpu"
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

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("s3_secret_key", None)
        d.pop("triton_admin_key", None)
        d.pop("triton_service_key", None)
        d.pop("result_signing_key", None)
        d.pop("auth_token", None)
        return d


def _coerce(field: dataclasses.Field, raw: Any, origin: str) -> Any:
    typ = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if typ == "int":
            return int(raw)
        if typ == "bool":
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
        if typ.startswith("tuple"):
            return _string_list(raw)
        if typ.startswith("dict"):
            return _price_table(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{origin}: {field.name} must be {typ}, got {raw!r}") from None


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


def load_settings(config_file: str | os.PathLike | None = None, **cli: Any) -> Settings:
    """Resolve settings. `cli` holds values given on the command line (None = not given)."""
    import yaml

    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    path = config_file or os.environ.get(CONFIG_FILE_ENV)
    if path is None and Path("bobench.yaml").exists():
        path = "bobench.yaml"
    if path:
        p = Path(path)
        if not p.exists():
            raise InvalidArgument(f"config file {p} does not exist")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise InvalidArgument(f"config file {p}: expected a mapping at the top level")
        for key, raw in data.items():
            if key not in fields:
                raise InvalidArgument(f"config file {p}: unknown setting {key!r}")
            values[key] = _coerce(fields[key], raw, str(p))
    for name, f in fields.items():
        env = os.environ.get(ENV_PREFIX + name.upper())
        if env is not None:
            values[name] = _coerce(f, env, ENV_PREFIX + name.upper())
    for name, raw in cli.items():
        if raw is not None:
            if name not in fields:
                raise InvalidArgument(f"unknown setting {name!r}")
            values[name] = _coerce(fields[name], raw, f"--{name.replace('_', '-')}")
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if s.batch_size <= 0:
        raise InvalidArgument(f"batch_size must be a positive integer, got {s.batch_size}")
    if s.threads < 0:
        raise InvalidArgument(f"threads must be >= 0 (0 = library default), got {s.threads}")
    if s.embedder not in ("onnxruntime", "torch", "triton"):
        raise InvalidArgument(f"embedder must be onnxruntime, torch or triton, got {s.embedder!r}")
    _check_not_placeholder(s)


def _check_not_placeholder(s: Settings) -> None:
    """Refuse known placeholder credentials (an unfilled deployment Secret) at start, naming the variable."""
    for name in ("s3_access_key", "s3_secret_key", "triton_admin_key", "triton_service_key"):
        if PLACEHOLDER.search(getattr(s, name)):
            raise InvalidArgument(
                f"{ENV_PREFIX}{name.upper()}: looks like a placeholder credential; generate real ones "
                "with `make deploy-secrets` (deploy/secrets/secrets.env)"
            )
