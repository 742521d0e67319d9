"""A stand-in Kubernetes API server for tests (there is no real API server on these machines).

It speaks enough of the Kubernetes REST API for the official `kubernetes` client as the bobench
Kubernetes executor uses it: Jobs in a namespace (create, get, list and watch with labelSelector /
fieldSelector and resourceVersion, delete), pods by `job-name` label, a pod's log. What a real cluster
does is imitated, not emulated:

- every object it receives is validated against the Kubernetes OpenAPI schema
  (`kubernetes_validate`, strict, 1.32) and against the client models (a `V1Job` round trip: keys
  that vanish are unknown fields); an invalid object is refused with 422 and kept in `invalid`;
- a Job's pod *runs the container's command as a local process*: `bob`/`python` map to the
  installed package's executables, env comes from the container (`secretKeyRef` resolved from the
  test's `secrets`, `fieldRef` from the pod), volume mount paths and the termination-message path
  map to per-pod directories. No image is pulled, nothing is isolated, no resources are enforced;
- pod phase, exit code (128 + signal for a killed process) and termination message (or, with
  FallbackToLogsOnError, the log tail) are reported; a failed pod is replaced per `backoffLimit` and
  `podFailurePolicy` (exit-code FailJob rules; DisruptionTarget pods via `disrupt()` are Ignored);
  `activeDeadlineSeconds` and TTLs are not enforced;
- DELETE kills the Job's processes and emits a DELETED watch event; `expire_watches(n)` makes the
  next n watches that give a resourceVersion fail with a 410 Gone ERROR event.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from k8s_standin_http import Handler, status_object


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _matches(obj: dict[str, Any], labels: str | None, fields: str | None) -> bool:
    have = obj["metadata"].get("labels", {})
    for term in filter(None, (labels or "").split(",")):
        key, _, value = term.partition("=")
        if have.get(key) != value:
            return False
    for term in filter(None, (fields or "").split(",")):
        key, _, value = term.partition("=")
        if key != "metadata.name" or obj["metadata"]["name"] != value:
            return False
    return True


class StandInKubeAPI:
    """The stand-in Kubernetes API server (see the module docstring). Start with `start()`; `url`,
    `configuration()` for the client; `stop()` kills every pod process it started."""

    def __init__(self, root: Path, secrets: dict[tuple[str, str], str] | None = None) -> None:
        self.root, self.secrets = Path(root), dict(secrets or {})
        self.bin_dir = Path(sys.executable).parent
        self.lock = threading.Condition()
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.procs: dict[str, subprocess.Popen] = {}  # pod name -> its process
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, namespace, type, job)
        self.rv = 0
        self.invalid: list[str] = []  # every refused object's problems
        self.received: list[dict[str, Any]] = []  # every object sent to us (validated)
        self.creates: collections.Counter = collections.Counter()  # Job name -> creations
        self.gone_watches = 0  # watches answered 410 so far
        self._expire = 0
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> StandInKubeAPI:
        api = self

        class BoundHandler(Handler):
            server_api = api

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), BoundHandler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def configuration(self):
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        return config

    def stop(self) -> None:
        with self.lock:
            procs = list(self.procs.values())
        for proc in procs:
            _kill(proc)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- test controls --------------------------------------------------------------------------
    def expire_watches(self, n: int = 1) -> None:
        with self.lock:
            self._expire += n

    def running_pid(self, job: str) -> int | None:
        with self.lock:
            for name, proc in self.procs.items():
                pod = next((p for p in self.pods.values() if p["metadata"]["name"] == name), None)
                if pod and pod["metadata"]["labels"]["job-name"] == job and proc.poll() is None:
                    return proc.pid
        return None

    def pods_of(self, job: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.pods.values() if p["metadata"]["labels"]["job-name"] == job]

    def disrupt(self, job: str) -> None:
        """Evict the Job's running pod (a DisruptionTarget condition, then SIGKILL)."""
        with self.lock:
            for pod in self.pods.values():
                if pod["metadata"]["labels"]["job-name"] == job and pod["status"]["phase"] == "Running":
                    pod["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True"}]
                    _kill(self.procs[pod["metadata"]["name"]])

    # -- object store ---------------------------------------------------------------------------
    def _bump(self, ns: str, kind: str, job: dict[str, Any]) -> None:
        """Give `job` a new resourceVersion and log the watch event (lock held)."""
        self.rv += 1
        job["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, ns, kind, json.loads(json.dumps(job))))
        self.lock.notify_all()

    def create_job(self, ns: str, job: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = job["metadata"]["name"]
        with self.lock:
            if (ns, name) in self.jobs:
                return 409, status_object(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            meta = job["metadata"]
            meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            job["status"] = {"active": 0, "failed": 0, "succeeded": 0, "startTime": _now()}
            self.jobs[(ns, name)] = job
            self.creates[name] += 1
            self._bump(ns, "ADDED", job)
            self._start_pod(ns, job)
        return 201, job

    def delete_job(self, ns: str, name: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            job = self.jobs.pop((ns, name), None)
            if job is None:
                return 404, status_object(404, "NotFound", f'jobs.batch "{name}" not found')
            job["metadata"]["deletionTimestamp"] = _now()
            self._bump(ns, "DELETED", job)
            uid = job["metadata"]["uid"]
            doomed = [k for k, p in self.pods.items() if p["metadata"]["labels"]["controller-uid"] == uid]
            procs = [self.procs.pop(self.pods[k]["metadata"]["name"], None) for k in doomed]
            for key in doomed:
                del self.pods[key]
        for proc in procs:
            if proc is not None:
                _kill(proc)
        return 200, status_object(200, "", "", status="Success")

    # -- pods -----------------------------------------------------------------------------------
    def _start_pod(self, ns: str, job: dict[str, Any]) -> None:
        """Create the Job's next pod and start its container command (lock held)."""
        template = job["spec"]["template"]
        name = f"{job['metadata']['name'][:50]}-{uuid.uuid4().hex[:5]}"
        uid = job["metadata"]["uid"]
        labels = {**template.get("metadata", {}).get("labels", {}), "job-name": job["metadata"]["name"]}
        labels.update({"controller-uid": uid, "batch.kubernetes.io/job-name": labels["job-name"]})
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "labels": labels,
                "creationTimestamp": _now(),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job["metadata"]["name"],
                        "uid": uid,
                        "controller": True,
                    }
                ],
            },
            "spec": template["spec"],
            "status": {"phase": "Running", "startTime": _now()},
        }
        self.pods[(ns, name)] = pod
        job["status"]["active"] = 1
        container = template["spec"]["containers"][0]
        poddir = self.root / name
        paths = {m["mountPath"]: poddir / "volumes" / m["name"] for m in container.get("volumeMounts", [])}
        paths[container.get("terminationMessagePath", "/dev/termination-log")] = poddir / "termination-log"
        for p in paths.values():
            (p if p.name != "termination-log" else p.parent).mkdir(parents=True, exist_ok=True)
        env = {"PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
        for item in container.get("env", []):
            env[item["name"]] = _map_paths(self._env_value(item, pod), paths)
        # the container's paths map to the pod's volumes; the local program itself never does (this
        # checkout may itself live under a mounted path such as /tmp)
        argv = [
            self._executable(container["command"][0]),
            *(_map_paths(a, paths) for a in [*container["command"][1:], *container.get("args", [])]),
        ]
        log = (poddir / "log").open("wb")
        proc = subprocess.Popen(argv, env=env, cwd=poddir, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        pod["status"]["containerStatuses"] = [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": _now()}},
            }
        ]
        threading.Thread(
            target=self._reap, args=(ns, job["metadata"]["name"], name, proc), daemon=True
        ).start()

    def _executable(self, command: str) -> str:
        if command in ("python", "python3"):
            return sys.executable
        local = self.bin_dir / command
        return str(local) if local.exists() else command

    def _env_value(self, item: dict[str, Any], pod: dict[str, Any]) -> str:
        if "value" in item:
            return item["value"]
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return self.secrets[(ref["name"], ref["key"])]
        field = source["fieldRef"]["fieldPath"]
        match = re.match(r"metadata\.labels\['(.+)'\]", field)
        if match:
            return pod["metadata"]["labels"][match.group(1)]
        return str(pod["metadata"][field.removeprefix("metadata.")])

    def _reap(self, ns: str, job_name: str, pod_name: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        exit_code = 128 - code if code < 0 else code
        with self.lock:
            pod, job = self.pods.get((ns, pod_name)), self.jobs.get((ns, job_name))
            if (
                pod is None
                or job is None
                or job["metadata"]["uid"] != pod["metadata"]["labels"]["controller-uid"]
            ):
                return  # deleted meanwhile
            self.procs.pop(pod_name, None)
            container = pod["spec"]["containers"][0]
            pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            message = self._termination_message(pod_name, container, exit_code)
            pod["status"]["containerStatuses"][0]["ready"] = False
            pod["status"]["containerStatuses"][0]["state"] = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "message": message,
                    "finishedAt": _now(),
                }
            }
            self._job_controller(ns, job, pod, exit_code)

    def _termination_message(self, pod_name: str, container: dict[str, Any], exit_code: int) -> str:
        poddir = self.root / pod_name
        path = poddir / "termination-log"
        message = path.read_text() if path.exists() else ""
        if not message and exit_code and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = "\n".join((poddir / "log").read_text(errors="replace").splitlines()[-80:])[-2048:]
        return message

    def _job_controller(self, ns: str, job: dict[str, Any], pod: dict[str, Any], exit_code: int) -> None:
        """The Job controller's reaction to a pod that ended (lock held)."""
        status, spec = job["status"], job["spec"]
        status["active"] = 0
        if exit_code == 0:
            status["succeeded"] = 1
            return self._end(ns, job, "Complete", "", "")
        action = _policy_action(spec.get("podFailurePolicy", {}), pod, exit_code)
        if action == "FailJob":
            status["failed"] += 1
            return self._end(ns, job, "Failed", "PodFailurePolicy", f"container exited with code {exit_code}")
        if action != "Ignore":
            status["failed"] += 1
            if status["failed"] > spec.get("backoffLimit", 6):
                return self._end(
                    ns, job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                )
        self._start_pod(ns, job)
        self._bump(ns, "MODIFIED", job)

    def _end(self, ns: str, job: dict[str, Any], kind: str, reason: str, message: str) -> None:
        cond = {"type": kind, "status": "True", "lastTransitionTime": _now()}
        if reason:
            cond.update(reason=reason, message=message)
        job["status"]["conditions"] = [cond]
        if kind == "Complete":
            job["status"]["completionTime"] = _now()
        self._bump(ns, "MODIFIED", job)

    # -- reads ----------------------------------------------------------------------------------
    def list_jobs(self, ns: str, labels: str | None, fields: str | None) -> dict[str, Any]:
        with self.lock:
            items = [j for (n, _), j in self.jobs.items() if n == ns and _matches(j, labels, fields)]
            return {
                "apiVersion": "batch/v1",
                "kind": "JobList",
                "metadata": {"resourceVersion": str(self.rv)},
                "items": json.loads(json.dumps(items)),
            }

    def watch_events(
        self, ns: str, labels: str | None, fields: str | None, since: str | None, timeout_s: float
    ):
        """Yield watch event dicts after resourceVersion `since` until `timeout_s` passes."""
        with self.lock:
            if since and self._expire > 0:
                self._expire -= 1
                self.gone_watches += 1
                yield {
                    "type": "ERROR",
                    "object": status_object(410, "Expired", f"too old resource version: {since}"),
                }
                return
        last, deadline = int(since or 0), time.monotonic() + timeout_s
        while True:
            with self.lock:
                new = [
                    e for e in self.events if e[0] > last and e[1] == ns and _matches(e[3], labels, fields)
                ]
                if not new:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self.lock.wait(min(left, 0.5))
                    continue
                last = self.events[-1][0]
            for _, _, kind, obj in new:
                yield {"type": kind, "object": obj}

    def pod_list(self, ns: str, labels: str | None) -> dict[str, Any]:
        with self.lock:
            items = [p for (n, _), p in self.pods.items() if n == ns and _matches(p, labels, None)]
            return {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": str(self.rv)},
                "items": json.loads(json.dumps(items)),
            }

    def pod_log(self, ns: str, name: str, tail: int | None) -> str | None:
        if (ns, name) not in self.pods:
            return None
        lines = (self.root / name / "log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:] if tail else lines) + "\n"


def _policy_action(policy: dict[str, Any], pod: dict[str, Any], exit_code: int) -> str | None:
    conditions = {c["type"] for c in pod["status"].get("conditions", []) if c.get("status") == "True"}
    name = pod["spec"]["containers"][0]["name"]
    for rule in policy.get("rules", []):
        codes = rule.get("onExitCodes")
        if codes and codes.get("containerName", name) == name:
            hit = exit_code in codes["values"]
            if hit == (codes["operator"] == "In"):
                return rule["action"]
        for cond in rule.get("onPodConditions", []):
            if cond["type"] in conditions:
                return rule["action"]
    return None


def _map_paths(value: str, paths: dict[str, Path]) -> str:
    for mount, local in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        if value == mount or value.startswith(mount.rstrip("/") + "/"):
            return str(local) + value[len(mount) :]
    return value


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
