"""`python -m bobench.store.setup`: prepare MinIO for bobench (what the `minio-setup` Job runs).

Steps, each idempotent (a second run changes nothing and exits 0; a changed Secret updates the user):

1. the bucket (`BOBENCH_BUCKET`, default `bobench`) is created when missing (S3 API);
2. two canned policies scoped to that bucket are written only when missing or different:
   `bobench-rw-<bucket>` (list the bucket; get/put/delete its objects) and `bobench-triton-ro-<bucket>`
   (list and get under `triton-models/` only);
3. the bobench user and the read-only Triton user are upserted with the Secret's keys (MinIO's admin
   API never returns a secret, so setting it is the only way a rotated Secret reaches MinIO; setting
   the same secret again changes nothing);
4. each user gets its policy attached when `user-info` does not list it yet;
5. Triton's model repository prefix exists: when nothing is under `triton-models/`, the marker
   object REPOSITORY_MARKER is written there, because tritonserver refuses an
   `s3://` repository with no object under it ("repository path is not a valid directory") and would
   stay unready on a fresh cluster (its read-only identity cannot write the marker itself). Triton
   only treats sub-folders as models, so the file is ignored.

Environment (read once in `main`, passed down as a `SetupConfig`): BOBENCH_S3_ENDPOINT,
MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, BOBENCH_S3_ACCESS_KEY, BOBENCH_S3_SECRET_KEY,
TRITON_S3_ACCESS_KEY, TRITON_S3_SECRET_KEY, BOBENCH_BUCKET, BOBENCH_TRITON_MODELS_PREFIX.

Errors: a missing, empty or placeholder credential is InvalidArgument naming the variable (nothing is
sent); MinIO not answering within `wait_s` is Unavailable; a refused root credential or admin call
is FailedPrecondition carrying MinIO's answer. `main` turns them into exit code 2 (bad config) or 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from bobench.config import PLACEHOLDER
from bobench.errors import BobenchError, FailedPrecondition, InvalidArgument, Unavailable
from bobench.exit_codes import FAILED, OK, TRANSIENT_ERRORS, UNAVAILABLE, USAGE_ERROR
from bobench.logs import setup_logging
from bobench.store.s3 import split_endpoint

log = logging.getLogger(__name__)

T = TypeVar("T")
REPOSITORY_MARKER = "bobench-repository.json"  # the object that makes an empty model repository exist
MIN_KEY_CHARS = {"access": 3, "secret": 8}  # MinIO refuses shorter access/secret keys
_READ_ACTIONS = ["s3:GetObject"]
_WRITE_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                  "s3:ListMultipartUploadParts"]  # fmt: skip


@dataclass(frozen=True)
class Identity:
    """An access/secret key pair and the environment variables it came from (named in errors)."""

    access_key: str
    secret_key: str
    source: str = ""


@dataclass(frozen=True)
class SetupConfig:
    """Everything one setup run needs; `from_env` builds it from the container's environment."""

    endpoint: str
    root: Identity
    bobench: Identity
    triton: Identity
    bucket: str = "bobench"
    models_prefix: str = "triton-models"
    wait_s: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, wait_s: float = 120.0) -> SetupConfig:
        """Read the variables listed in the module docstring; InvalidArgument names a missing one."""

        def pair(user_var: str, secret_var: str) -> Identity:
            return Identity(env.get(user_var, ""), env.get(secret_var, ""), f"{user_var}/{secret_var}")

        endpoint = env.get("BOBENCH_S3_ENDPOINT", "").strip()
        if not endpoint:
            raise InvalidArgument("BOBENCH_S3_ENDPOINT: is required (e.g. http://minio:9000)")
        return cls(
            endpoint=endpoint,
            root=pair("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
            bobench=pair("BOBENCH_S3_ACCESS_KEY", "BOBENCH_S3_SECRET_KEY"),
            triton=pair("TRITON_S3_ACCESS_KEY", "TRITON_S3_SECRET_KEY"),
            bucket=env.get("BOBENCH_BUCKET", "").strip() or "bobench",
            models_prefix=env.get("BOBENCH_TRITON_MODELS_PREFIX", "").strip("/ ") or "triton-models",
            wait_s=wait_s,
        )

    def validate(self) -> None:
        """Refuse empty, placeholder or too-short keys, and one key shared by two identities."""
        for ident in (self.root, self.bobench, self.triton):
            check_credential(ident)
        keys = [self.root.access_key, self.bobench.access_key, self.triton.access_key]
        if len(set(keys)) != len(keys):
            raise InvalidArgument(
                "MINIO_ROOT_USER, BOBENCH_S3_ACCESS_KEY and TRITON_S3_ACCESS_KEY must be three different users"
            )
        from minio.helpers import check_bucket_name

        try:
            check_bucket_name(self.bucket)
        except ValueError as exc:
            raise InvalidArgument(
                f"BOBENCH_BUCKET: {self.bucket!r} is not a valid bucket name: {exc}"
            ) from None


def check_credential(ident: Identity) -> None:
    """InvalidArgument naming `ident.source` when a key is empty, a placeholder or too short."""
    for kind, value in (("access", ident.access_key), ("secret", ident.secret_key)):
        if not value.strip():
            raise InvalidArgument(f"{ident.source}: the {kind} key is empty")
        if PLACEHOLDER.search(value):
            raise InvalidArgument(
                f"{ident.source}: the {kind} key looks like a placeholder; fill deploy/secrets.env "
                "with `make deploy-secrets`"
            )
        if len(value) < MIN_KEY_CHARS[kind]:
            raise InvalidArgument(
                f"{ident.source}: the {kind} key needs at least {MIN_KEY_CHARS[kind]} characters"
            )


def bucket_policy(bucket: str) -> dict[str, Any]:
    """Read/write on every object of `bucket`, and listing it; nothing else."""
    return _policy(
        [
            _statement(["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                       [f"arn:aws:s3:::{bucket}"]),
            _statement(_WRITE_ACTIONS, [f"arn:aws:s3:::{bucket}/*"]),
        ]
    )  # fmt: skip


def triton_policy(bucket: str, prefix: str) -> dict[str, Any]:
    """Read-only under `bucket/prefix/`: what Triton's S3 model repository needs."""
    listing = _statement(["s3:ListBucket"], [f"arn:aws:s3:::{bucket}"])
    listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}/*", prefix, f"{prefix}/"]}}
    return _policy(
        [
            _statement(["s3:GetBucketLocation"], [f"arn:aws:s3:::{bucket}"]),
            listing,
            _statement(_READ_ACTIONS, [f"arn:aws:s3:::{bucket}/{prefix}/*"]),
        ]
    )


def _statement(actions: list[str], resources: list[str]) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": list(actions), "Resource": list(resources)}


def _policy(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": statements}


def same_policy(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal as IAM documents: statement, action and resource order and string-vs-list ignored."""

    def norm(doc: Mapping[str, Any]) -> list[str]:
        out = []
        for st in doc.get("Statement", []):
            st = {k: sorted(v) if isinstance(v, list) else v for k, v in st.items() if k != "Sid"}
            for key in ("Action", "Resource"):
                if isinstance(st.get(key), str):
                    st[key] = [st[key]]
            out.append(json.dumps(st, sort_keys=True))
        return sorted(out)

    return norm(a) == norm(b)


class MinioSetup:
    """One setup run against the MinIO at `config.endpoint`; `run()` returns what it did per step."""

    def __init__(self, config: SetupConfig) -> None:
        from minio import Minio, MinioAdmin
        from minio.credentials import StaticProvider

        config.validate()
        self.config = config
        host, secure = split_endpoint(config.endpoint, False)
        root = config.root
        self.s3 = Minio(host, root.access_key, root.secret_key, secure=secure, region="us-east-1")
        self.admin = MinioAdmin(
            endpoint=host, credentials=StaticProvider(root.access_key, root.secret_key), secure=secure
        )

    def run(self) -> dict[str, str]:
        """Apply every step; returns {step: "created" | "updated" | "unchanged" | "set"}."""
        cfg = self.config
        done = {f"bucket {cfg.bucket}": self._wait_for_store(self._ensure_bucket)}
        policies = {
            f"bobench-rw-{cfg.bucket}": (bucket_policy(cfg.bucket), cfg.bobench),
            f"bobench-triton-ro-{cfg.bucket}": (triton_policy(cfg.bucket, cfg.models_prefix), cfg.triton),
        }
        for name, (doc, user) in policies.items():
            done[f"policy {name}"] = self._ensure_policy(name, doc)
            done[f"user {user.access_key}"] = self._ensure_user(user)
            done[f"attach {name} -> {user.access_key}"] = self._ensure_attached(name, user)
        done[f"repository {cfg.bucket}/{cfg.models_prefix}/"] = self._ensure_models_prefix()
        return done

    # -- steps -----------------------------------------------------------------------------------
    def _ensure_bucket(self) -> str:
        if self.s3.bucket_exists(self.config.bucket):
            return "unchanged"
        self.s3.make_bucket(self.config.bucket)
        return "created"

    def _ensure_models_prefix(self) -> str:
        import io

        from minio.error import S3Error

        marker = json.dumps({"bobench": "triton model repository"}).encode()
        cfg = self.config
        try:
            if next(iter(self.s3.list_objects(cfg.bucket, prefix=f"{cfg.models_prefix}/")), None) is not None:
                return "unchanged"
            self.s3.put_object(
                cfg.bucket, f"{cfg.models_prefix}/{REPOSITORY_MARKER}", io.BytesIO(marker), len(marker)
            )
        except S3Error as exc:
            raise FailedPrecondition(
                f"MinIO at {cfg.endpoint} refused writing s3://{cfg.bucket}/{cfg.models_prefix}/: {exc.code}"
            ) from None
        return "created"

    def _ensure_policy(self, name: str, doc: dict[str, Any]) -> str:
        current = self._admin_json(lambda: self.admin.policy_info(name), f"reading policy {name}")
        if current is not None and same_policy(current.get("Policy", current), doc):
            return "unchanged"
        self._admin(lambda: self.admin.policy_add(name, policy=doc), f"writing policy {name}")
        return "created" if current is None else "updated"

    def _ensure_user(self, user: Identity) -> str:
        info = self._user_info(user)
        self._admin(
            lambda: self.admin.user_add(user.access_key, user.secret_key), f"setting user from {user.source}"
        )
        return "created" if info is None else "set"

    def _ensure_attached(self, policy: str, user: Identity) -> str:
        info = self._user_info(user) or {}
        attached = {p.strip() for p in str(info.get("policyName", "")).split(",") if p.strip()}
        if policy in attached:
            return "unchanged"
        self._admin(lambda: self.admin.attach_policy([policy], user=user.access_key), f"attaching {policy}")
        return "attached"

    # -- plumbing ----------------------------------------------------------------------------------
    def _user_info(self, user: Identity) -> dict[str, Any] | None:
        return self._admin_json(
            lambda: self.admin.user_info(user.access_key), f"reading user from {user.source}"
        )

    def _admin_json(self, call: Callable[[], str], what: str) -> dict[str, Any] | None:
        """`call`'s JSON answer, or None when MinIO says the user/policy does not exist (404)."""
        from minio.error import MinioAdminException

        try:
            return json.loads(call() or "{}")
        except MinioAdminException as exc:
            if str(exc._code) == "404":
                return None
            raise self._refused(exc, what) from None

    def _admin(self, call: Callable[[], T], what: str) -> T:
        from minio.error import MinioAdminException

        try:
            return call()
        except MinioAdminException as exc:
            raise self._refused(exc, what) from None

    def _refused(self, exc: Any, what: str) -> FailedPrecondition:
        return FailedPrecondition(
            f"MinIO admin API at {self.config.endpoint} refused {what}: HTTP {exc._code}: {exc._body[:300]}"
        )

    def _wait_for_store(self, step: Callable[[], T]) -> T:
        """Run the first S3 step, retrying while MinIO does not answer, for up to `wait_s`."""
        from minio.error import S3Error, ServerError
        from urllib3.exceptions import HTTPError

        deadline, delay_s = time.monotonic() + self.config.wait_s, 0.5
        while True:
            try:
                return step()
            except S3Error as exc:
                raise FailedPrecondition(
                    f"MinIO at {self.config.endpoint} refused the root credential "
                    f"(MINIO_ROOT_USER/MINIO_ROOT_PASSWORD): {exc.code}: {exc.message}"
                ) from None
            except (HTTPError, OSError, ServerError) as exc:
                if time.monotonic() + delay_s > deadline:
                    raise Unavailable(
                        f"MinIO at {self.config.endpoint} did not answer within {self.config.wait_s:.0f} s: {exc}"
                    ) from None
                log.info(
                    "MinIO at %s not answering yet (%s); retrying", self.config.endpoint, type(exc).__name__
                )
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the setup once; exit 0 on success, 2 on a bad config, 1 when MinIO fails or refuses."""
    parser = argparse.ArgumentParser(
        prog="python -m bobench.store.setup", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--wait-s", type=float, default=120.0, help="how long to wait for MinIO to answer")
    args = parser.parse_args(argv)
    setup_logging(logging.INFO)
    try:
        config = SetupConfig.from_env(os.environ if env is None else env, wait_s=args.wait_s)
        done = MinioSetup(config).run()
    except InvalidArgument as exc:
        log.error("minio setup: %s", exc)
        return USAGE_ERROR
    except BobenchError as exc:  # MinIO did not answer: UNAVAILABLE; it refused: FAILED (retried too)
        log.error("minio setup failed: %s", exc)
        return UNAVAILABLE if isinstance(exc, TRANSIENT_ERRORS) else FAILED
    for step, outcome in done.items():
        log.info("%s: %s", step, outcome)
    return OK


if __name__ == "__main__":
    raise SystemExit(main())
