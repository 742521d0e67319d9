"""The HTTP side of the stand-in Kubernetes API server (`k8s_standin.StandInKubeAPI`): routes the
Job and Pod REST paths the bobench Kubernetes executor uses, refuses invalid objects with 422 (see
`k8s_schema`), and streams watches as chunked JSON lines like the real API server."""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from k8s_schema import schema_problems

_JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?$")
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)(/log)?)?$")


def status_object(code: int, reason: str, message: str, status: str = "Failure") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": status,
        "reason": reason,
        "message": message,
        "code": code,
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_api: Any  # the StandInKubeAPI, bound by a subclass

    def log_message(self, *args: Any) -> None:  # quiet: pytest shows failures, not access logs
        pass

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def _send(self, code: int, obj: Any, content_type: str = "application/json") -> None:
        data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse_invalid(self, obj: dict[str, Any] | None, model: str | None) -> bool:
        api = self.server_api
        if obj is None:
            return False
        api.received.append(obj)
        problems = schema_problems(obj, model)
        if problems:
            api.invalid.extend(problems)
            self._send(422, status_object(422, "Invalid", "; ".join(problems)))
        return bool(problems)

    def do_POST(self) -> None:
        match = _JOBS.match(urlparse(self.path).path)
        body = self._body()
        if not match or match.group(2) or body is None:
            return self._send(404, status_object(404, "NotFound", self.path))
        if not self._refuse_invalid(body, "V1Job"):
            self._send(*self.server_api.create_job(match.group(1), body))

    def do_DELETE(self) -> None:
        match = _JOBS.match(urlparse(self.path).path)
        if not match or not match.group(2):
            return self._send(404, status_object(404, "NotFound", self.path))
        if not self._refuse_invalid(self._body(), "V1DeleteOptions"):
            self._send(*self.server_api.delete_job(match.group(1), match.group(2)))

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        api = self.server_api
        if match := _JOBS.match(url.path):
            ns, name = match.groups()
            if query.get("watch") in ("true", "1"):
                return self._watch(ns, query)
            if name:
                found = api.list_jobs(ns, None, f"metadata.name={name}")["items"]
                return (
                    self._send(200, found[0])
                    if found
                    else self._send(404, status_object(404, "NotFound", name))
                )
            return self._send(200, api.list_jobs(ns, query.get("labelSelector"), query.get("fieldSelector")))
        if match := _PODS.match(url.path):
            ns, name, is_log = match.groups()
            if is_log:
                text = api.pod_log(ns, name, int(query["tailLines"]) if "tailLines" in query else None)
                return (
                    self._send(200, text, "text/plain")
                    if text is not None
                    else self._send(404, status_object(404, "NotFound", name))
                )
            return self._send(200, api.pod_list(ns, query.get("labelSelector")))
        self._send(404, status_object(404, "NotFound", self.path))

    def _watch(self, ns: str, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = self.server_api.watch_events(
            ns,
            query.get("labelSelector"),
            query.get("fieldSelector"),
            query.get("resourceVersion"),
            float(query.get("timeoutSeconds", 30)),
        )
        try:
            for event in events:
                line = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
