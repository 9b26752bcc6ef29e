"""Ray heads of a test's own (`ray start --head` with its own ports, temp folder and token), and how a
test stops one: by the processes that name its temp folder, never a bare `ray stop`, which stops
every Ray of the user on the machine. Used by tests/test_ray_job.py and the suite's bystander
(tests/conftest.py)."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import free_ports  # noqa: E402

RAY = shutil.which("ray") or str(Path(sys.executable).parent / "ray")


@contextlib.contextmanager
def own_ray_head(num_cpus: int = 2, dashboard: bool = True):
    """A Ray head of our own (ports, temp folder, auth token), stopped afterwards with every process it
    started: yields (dashboard address, client env, temp folder).

    Ray >= 2.5x turns token authentication on at `ray start --head`; head and client share a token of
    this test's own through RAY_AUTH_TOKEN, so nothing is read from or written to ~/.ray."""
    names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
             "metrics-export-port", "ray-client-server-port")
    port, dashboard_port, *others = free_ports(2 + len(names))
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")   # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    # every port of its own: two heads on one machine otherwise clash on the agents' defaults (52365...)
    ports = [f"--{name}={number}" for name, number in zip(names, others)]
    started = subprocess.run([RAY, "start", "--head", f"--port={port}", f"--dashboard-port={dashboard_port}", *ports,
                              f"--include-dashboard={str(dashboard).lower()}", f"--num-cpus={num_cpus}",
                              f"--temp-dir={temp}", "--disable-usage-stats"],
                             env=env, capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        stop_ray_started_in(temp, port)
        raise RuntimeError(f"ray start --head failed ({started.returncode}):\n{started.stderr[-3000:]}")
    try:
        yield f"http://127.0.0.1:{dashboard_port}", env, temp
    finally:
        stop_ray_started_in(temp, port)
        shutil.rmtree(temp, ignore_errors=True)


def processes_naming(temp: str, gcs_port: int | None = None) -> list:
    """The processes whose command line names the head's temp folder or, given its GCS port, its address:
    Ray's client server (`ray.util.client.server --address=IP:PORT`) names no folder, and `ray start`,
    its parent, has exited, so it is no child of the head's other processes either (seen left behind)."""
    import psutil

    def ours(arg: str) -> bool:
        return temp in arg or (gcs_port is not None and "address=" in arg and arg.endswith(f":{gcs_port}"))

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(ours(arg) for arg in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def stop_ray_started_in(temp: str, gcs_port: int | None = None, timeout: float = 30.0) -> None:
    """Stop the Ray head whose --temp-dir is `temp`, and only it, as `ray stop --force` would (SIGKILL):
    its processes name that folder or its GCS address on their command lines, and its workers are their
    children. Never `ray stop`, which stops every Ray of this user on the machine."""
    import psutil

    procs = {p.pid: p for root in processes_naming(temp, gcs_port) for p in [root, *_children(root)]}
    for proc in procs.values():
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=timeout)
    assert not alive, f"Ray processes of {temp} still alive: {alive}"
    assert processes_naming(temp, gcs_port) == [], f"Ray processes of {temp} started while it was being stopped"


def _children(proc) -> list:
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
