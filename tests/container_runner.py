"""Run a rendered Kubernetes container as a local process, as the kubelet would start it, for the
deployment entrypoint tests (no container engine and no cluster run on these machines).

What is taken as it is: the image's ENTRYPOINT/CMD (parsed from its Dockerfile in services/, or the
documented entrypoint of a third-party image), the manifest's `command`/`args` with Kubernetes' rules
(command replaces ENTRYPOINT and drops CMD; args alone replace CMD) and `$(VAR)` expansion, and the
container's env with ConfigMaps and Secrets resolved from the rendered objects (tests/deploy_render).

What is rewritten, and only this:
- in-cluster addresses (`minio:9000`, `embedder:800x`, the evaluators' `dns:///evaluator-headless...`)
  become the loopback servers the test started (`Loopback.addresses`);
- listen addresses: `*_HOST=0.0.0.0` -> 127.0.0.1, a `*_PORT` env equal to one of the container's
  ports -> 0 (the bobench services print the port they bound), `--*-port=N` / `--web.listen-address=:N`
  flags -> a free loopback port; the container port -> local port map is kept for the probes;
- volume mount paths -> per-container folders (ConfigMap/Secret volumes written out from the rendered
  objects);
- the image's executables -> this machine's: `python` = this interpreter (the installed package),
  `tritonserver` = the nvidia-pytriton build (plus its python-backend directory, loopback binds and
  library path, which the NGC image has built in), `/opt/nvidia/nvidia_entrypoint.sh` (NVIDIA's
  banner/driver-check wrapper that execs its arguments) is dropped, `/bin/prometheus` = Debian's.

The readiness probe that decides "healthy" is the container's own `readinessProbe` (gRPC health or
HTTP GET), sent to the mapped local port.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy_render import ROOT, data_of, expand, resolved_env

from bobench.stack.procs import probe_free_port

# image repository (registry and tag stripped) -> its Dockerfile
IMAGE_DOCKERFILES = {
    "bobench/embedder": "services/embedder/Dockerfile",
    "bobench/evaluator": "services/evaluator/Dockerfile",
    "bobench/scheduler": "services/scheduler/Dockerfile",
    "bobench/finetune-gpu": "services/evaluator/finetune-gpu.Dockerfile",
}
# third-party images that run here: their published ENTRYPOINT and CMD
THIRD_PARTY = {"prom/prometheus": (["/bin/prometheus"], ["--config.file=/etc/prometheus/prometheus.yml"])}
NOT_RUNNABLE = {
    "quay.io/minio/minio": "no MinIO server can run here: real SeaweedFS serves its S3 API and "
    "tests/minio_admin_standin.py (a stand-in) its admin API",
    "grafana/grafana": "no Grafana binary on these machines",
}


def image_repository(image: str) -> str:
    """'registry.example.com/bobench/evaluator:0.1.0' -> the known repository it names."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    for known in (*IMAGE_DOCKERFILES, *THIRD_PARTY, *NOT_RUNNABLE):
        if name == known or name.endswith("/" + known):
            return known
    raise AssertionError(f"image {image!r} is not built from services/ nor a known third-party image")


def parse_dockerfile(path: Path) -> tuple[list[str], list[str]]:
    """(ENTRYPOINT, CMD) of the final stage (exec or shell form; a stage's ENTRYPOINT drops CMD
    inherited from its base, as Docker does)."""
    text = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    )
    entrypoint: list[str] = []
    cmd: list[str] = []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        word = word.upper()
        if word == "FROM":
            entrypoint, cmd = [], []
        elif word in ("ENTRYPOINT", "CMD"):
            rest = rest.strip()
            value = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
            if word == "ENTRYPOINT":
                entrypoint, cmd = value, []
            else:
                cmd = value
    return entrypoint, cmd


def image_entrypoint(image: str) -> tuple[list[str], list[str]]:
    repo = image_repository(image)
    if repo in THIRD_PARTY:
        return THIRD_PARTY[repo]
    return parse_dockerfile(ROOT / IMAGE_DOCKERFILES[repo])


def kubelet_argv(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The process argv Kubernetes starts: command/args over the image's ENTRYPOINT/CMD, $(VAR) expanded."""
    entrypoint, cmd = image_entrypoint(container["image"])
    if "command" in container:
        argv = list(container["command"]) + list(container.get("args", []))
    elif "args" in container:
        argv = entrypoint + list(container["args"])
    else:
        argv = entrypoint + cmd
    assert argv, f"container {container['name']}: neither the image nor the manifest gives a command"
    return [expand(a, env) for a in argv]


@dataclass
class Loopback:
    """Where the in-cluster names point on this machine: `addresses` maps 'host:port' -> 'host:port';
    `evaluators` replaces the scheduler's evaluator target."""

    addresses: dict[str, str] = field(default_factory=dict)
    evaluators: str = ""

    def rewrite(self, value: str) -> str:
        if self.evaluators:
            value = re.sub(r"dns:///evaluator-headless[^,\s]*:\d+", self.evaluators, value)
        for cluster, local in self.addresses.items():
            value = re.sub(rf"(?<![\w.-]){re.escape(cluster)}(?!\d)", local, value)
        return value


@dataclass
class LocalContainer:
    """One container, translated (see module docstring); `start()` launches it."""

    pod: str
    container: dict[str, Any]
    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int]  # container port -> local port (0 = reported by the process itself)
    work: Path
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.work / "output.log"

    def start(self) -> LocalContainer:
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.work, start_new_session=True,
        )  # fmt: skip
        return self

    def run(self, timeout_s: float) -> subprocess.CompletedProcess:
        """Run to completion (a Job's container); output in the result."""
        return subprocess.run(
            self.argv, env=self.env, capture_output=True, text=True, timeout=timeout_s, cwd=self.work
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def reported_ports(self, timeout_s: float) -> None:
        """Fill the 0 ports from the JSON ready line a bobench service prints ({"port", "metrics_port"})."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_running()
            for line in self.log().splitlines():
                if line.startswith("{") and '"event": "serving"' in line:
                    info = json.loads(line)
                    named = {p.get("name"): p["containerPort"] for p in self.container.get("ports", [])}
                    for name, key in (("grpc", "port"), ("metrics", "metrics_port")):
                        if name in named and self.ports.get(named[name]) == 0 and info.get(key):
                            self.ports[named[name]] = int(info[key])
                    return
            time.sleep(0.2)
        raise AssertionError(f"{self.pod}: no ready line within {timeout_s:.0f} s:\n{self.log()[-3000:]}")

    def assert_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.pod} exited with {self.process.returncode}:\n{self.log()[-3000:]}")

    def local_port(self, port: int | str) -> int:
        if isinstance(port, str):
            port = next(p["containerPort"] for p in self.container["ports"] if p.get("name") == port)
        assert self.ports.get(port), f"{self.pod}: container port {port} has no local port"
        return self.ports[port]

    def probe_ready(self) -> bool:
        """The container's readinessProbe, once, against the local port."""
        probe = self.container["readinessProbe"]
        if "grpc" in probe:
            return grpc_serving(
                f"127.0.0.1:{self.local_port(probe['grpc']['port'])}", probe["grpc"].get("service", "")
            )
        if "httpGet" in probe:
            url = f"http://127.0.0.1:{self.local_port(probe['httpGet']['port'])}{probe['httpGet'].get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=3) as answer:
                    return 200 <= answer.status < 400
            except OSError:
                return False
        raise AssertionError(f"{self.pod}: readinessProbe {probe} is neither grpc nor httpGet")

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_running()
            if self.probe_ready():
                return
            time.sleep(0.5)
        raise AssertionError(
            f"{self.pod}: readinessProbe not passing in {timeout_s:.0f} s:\n{self.log()[-3000:]}"
        )

    def stop(self) -> None:
        from bobench.stack.procs import stop_pid

        if self.process is not None:
            stop_pid(self.process.pid, 20, self.process)


def grpc_serving(address: str, service: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=3
            )
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def localize(
    docs: list[dict],
    workload: dict,
    container: dict,
    loopback: Loopback,
    work: Path,
    extra_env: dict[str, str],
) -> LocalContainer:
    """Translate one container of `workload` (see module docstring)."""
    pod = f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"
    work.mkdir(parents=True, exist_ok=True)
    mounts = mount_dirs(docs, workload["spec"]["template"]["spec"], container, work)
    own_ports = {p["containerPort"] for p in container.get("ports", [])}
    ports: dict[int, int] = {}
    env = resolved_env(docs, container)
    for key, value in list(env.items()):
        if key.endswith("_HOST") and value == "0.0.0.0":
            env[key] = "127.0.0.1"
        elif key.endswith("_PORT") and value.isdigit() and int(value) in own_ports:
            ports[int(value)], env[key] = 0, "0"
        else:
            env[key] = remap_paths(loopback.rewrite(value), mounts)
    argv = [
        remap_paths(loopback.rewrite(a), mounts)
        for a in kubelet_argv(container, resolved_env(docs, container))
    ]
    argv = [listen_flag(a, own_ports, ports) for a in argv]
    argv, local_env = local_executable(argv, work)
    process_env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        **env,
        **local_env,
        **extra_env,
    }
    return LocalContainer(pod, container, argv, process_env, ports, work)


def mount_dirs(docs: list[dict], pod_spec: dict, container: dict, work: Path) -> dict[str, Path]:
    """mountPath -> a local folder; ConfigMap and Secret volumes are written out."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        local = work / "mounts" / mount["mountPath"].strip("/")
        local.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
            if key in volume:
                ref = volume[key].get("name") or volume[key].get("secretName")
                for name, text in data_of(docs, kind, ref).items():
                    (local / name).write_text(text)
        out[mount["mountPath"]] = local
    return out


def remap_paths(value: str, mounts: dict[str, Path]) -> str:
    """Mount paths in `value` -> their local folders (one pass: a local folder is never remapped)."""
    if not mounts:
        return value
    alternatives = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
    pattern = rf"(?<![\w/:.])({alternatives})(?=/|$|\s|,)"
    return re.sub(pattern, lambda m: str(mounts[m.group(1)]), value)


def listen_flag(arg: str, own_ports: set[int], ports: dict[int, int]) -> str:
    """--http-port=8000 / --web.listen-address=:9090 -> a free loopback port (recorded in `ports`)."""
    match = re.fullmatch(r"(--[\w.-]*port)=(\d+)", arg) or re.fullmatch(
        r"(--[\w.-]*listen-address)=[\w.]*:(\d+)", arg
    )
    if not match or int(match.group(2)) not in own_ports:
        return arg
    port = ports.setdefault(int(match.group(2)), probe_free_port())
    host = "127.0.0.1:" if "address" in match.group(1) else ""
    return f"{match.group(1)}={host}{port}"


def local_executable(argv: list[str], work: Path) -> tuple[list[str], dict[str, str]]:
    """The image's program -> this machine's (module docstring); returns (argv, extra env)."""
    if argv[0] == "/opt/nvidia/nvidia_entrypoint.sh":
        argv = argv[1:]
    program = argv[0]
    if program == "python":
        return [sys.executable, *argv[1:]], {}
    if program in ("bob",):
        return [str(Path(sys.executable).parent / program), *argv[1:]], {}
    if program == "tritonserver":
        from bobench.serving.triton import prepare_backend_dir, server_environment, tritonserver_home

        backends = prepare_backend_dir(work / "backends")
        binds = [f"--{k}-address=127.0.0.1" for k in ("http", "grpc", "metrics")]
        env = server_environment()
        local = [
            str(tritonserver_home() / "bin" / "tritonserver"),
            *argv[1:],
            f"--backend-directory={backends}",
            *binds,
        ]
        return local, {"LD_LIBRARY_PATH": env["LD_LIBRARY_PATH"]}
    if program == "/bin/prometheus":
        found = shutil.which("prometheus")
        assert found, "the prometheus binary is not installed (apt-get install prometheus)"
        return [found, *argv[1:]], {}
    raise AssertionError(f"no local equivalent for the image program {program!r}")
