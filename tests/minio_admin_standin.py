"""A **stand-in** for MinIO's admin API (no MinIO server can run on these machines; SeaweedFS, which
serves S3 here, has no MinIO admin API).

`MinioAdminStandIn` is a small HTTP server on 127.0.0.1:0 that implements only the admin calls
`bobench.store.setup` makes (add-user, user-info, add-canned-policy, info-canned-policy,
idp/builtin/policy/attach) and records users, policies and every mutating call. Bodies the SDK
encrypts are decrypted with the SDK's own `minio.crypto` helpers and the root secret, so a wrong root
password fails as it would on MinIO; the Authorization header must name the root access key (the
SigV4 signature itself is not re-verified). Every other path (the S3 API) is forwarded byte for byte,
Host header included, to a real upstream S3 server (SeaweedFS), so one endpoint answers both APIs
like MinIO's port 9000. Like MinIO, attaching a policy that is already attached is an error, and an
unknown user or policy answers 404.
"""

from __future__ import annotations

import copy
import http.client
import io
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_ADMIN = "/minio/admin/v3/"
_CREDENTIAL = re.compile(r"Credential=([^/]+)/")


class _Body(io.BytesIO):
    """What `minio.crypto.decrypt` expects of a urllib3 response."""

    def release_conn(self) -> None:
        pass


@dataclass
class AdminState:
    """Users (access key -> {"secretKey", "status", "policies"}), canned policies, mutating calls."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy({"users": self.users, "policies": self.policies})


class MinioAdminStandIn:
    """Start with `start()`; `.endpoint` is http://127.0.0.1:PORT; `stop()` shuts it down.

    `unready_requests`: the first N requests answer 503 XMinioServerNotInitialized (MinIO starting).
    """

    def __init__(
        self, root_user: str, root_password: str, upstream: str | None = None, unready_requests: int = 0
    ):
        self.root_user, self.root_password = root_user, root_password
        self.upstream = upstream  # host:port of the S3 server that serves non-admin paths
        self.state = AdminState()
        self.unready_left = unready_requests
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> MinioAdminStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                standin._handle(self)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- request handling ----------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        with self._lock:
            if self.unready_left > 0:
                self.unready_left -= 1
                return self._reply(req, 503, {"Code": "XMinioServerNotInitialized"})
        url = urlsplit(req.path)
        if not url.path.startswith(_ADMIN):
            return self._forward(req, body)
        match = _CREDENTIAL.search(req.headers.get("Authorization", ""))
        if not match or match.group(1) != self.root_user:
            return self._reply(req, 403, {"Code": "InvalidAccessKeyId"})
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        command = url.path[len(_ADMIN) :]
        try:
            with self._lock:
                status, answer = self._admin(req.command, command, query, body)
        except ValueError as exc:  # a body the root secret does not decrypt
            status, answer = 400, {"Code": "XMinioAdminConfigBadJSON", "Message": str(exc)}
        self._reply(req, status, answer)

    def _admin(self, method: str, command: str, query: dict[str, str], body: bytes) -> tuple[int, Any]:
        state = self.state
        if (method, command) == ("PUT", "add-user"):
            doc = json.loads(self._decrypt(body))
            user = state.users.setdefault(query["accessKey"], {"policies": []})
            user.update(secretKey=doc["secretKey"], status=doc["status"])
            state.calls.append(f"add-user {query['accessKey']}")
            return 200, ""
        if (method, command) == ("GET", "user-info"):
            user = state.users.get(query["accessKey"])
            if user is None:
                return 404, {"Code": "XMinioAdminNoSuchUser"}
            return 200, {"policyName": ",".join(user["policies"]), "status": user["status"]}
        if (method, command) == ("PUT", "add-canned-policy"):
            state.policies[query["name"]] = json.loads(body)
            state.calls.append(f"add-canned-policy {query['name']}")
            return 200, ""
        if (method, command) == ("GET", "info-canned-policy"):
            doc = state.policies.get(query["name"])
            return (404, {"Code": "XMinioAdminNoSuchPolicy"}) if doc is None else (200, doc)
        if (method, command) == ("POST", "idp/builtin/policy/attach"):
            return self._attach(json.loads(self._decrypt(body)))
        return 501, {"Code": "NotImplemented", "Message": f"the stand-in has no {method} {command}"}

    def _attach(self, doc: dict[str, Any]) -> tuple[int, Any]:
        user = self.state.users.get(doc["user"])
        if user is None:
            return 404, {"Code": "XMinioAdminNoSuchUser"}
        missing = [p for p in doc["policies"] if p not in self.state.policies]
        if missing:
            return 404, {"Code": "XMinioAdminNoSuchPolicy", "Message": ",".join(missing)}
        if all(p in user["policies"] for p in doc["policies"]):
            return 400, {"Code": "XMinioAdminPolicyChangeAlreadyApplied"}
        user["policies"] += [p for p in doc["policies"] if p not in user["policies"]]
        self.state.calls.append(f"attach {','.join(doc['policies'])} {doc['user']}")
        return 204, None

    def _decrypt(self, body: bytes) -> bytes:
        from minio.crypto import decrypt

        try:
            return decrypt(_Body(body), self.root_password)
        except Exception as exc:
            raise ValueError(f"body does not decrypt with the root password: {type(exc).__name__}") from None

    def _forward(self, req: BaseHTTPRequestHandler, body: bytes) -> None:
        if self.upstream is None:
            return self._reply(req, 502, {"Code": "NoUpstream"})
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.putrequest(req.command, req.path, skip_host=True, skip_accept_encoding=True)
            for key, value in req.headers.items():
                conn.putheader(key, value)
            conn.endheaders(body or None)
            answer = conn.getresponse()
            data = answer.read()
            req.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    req.send_header(key, value)
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            if req.command != "HEAD":
                req.wfile.write(data)
        finally:
            conn.close()

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, status: int, answer: Any) -> None:
        data = b"" if answer is None else (answer if isinstance(answer, str) else json.dumps(answer)).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if req.command != "HEAD" and status != 204:
            req.wfile.write(data)
