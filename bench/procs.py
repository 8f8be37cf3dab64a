"""Starting, watching and stopping the bench's local processes (all on 127.0.0.1).

A `Stack` owns every process it starts and ends them (SIGTERM, then SIGKILL) when it closes, so a
failed scenario never leaves a server behind.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, body=None, timeout: float = 30.0) -> tuple[int, object]:
    """One control request (setup, stats): plain http.client, not performance critical."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        data = orjson.dumps(body) if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return resp.status, raw.decode("utf-8", "replace")
    finally:
        conn.close()


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class StartError(RuntimeError):
    pass


class Process:
    def __init__(self, name: str, port: int, popen: subprocess.Popen, log: Path) -> None:
        self.name, self.port, self.popen, self.log = name, port, popen, log
        self.workdir = log.parent
        self.data_dir: Path | None = None  # the broker's store directory

    def cpu_seconds(self) -> float:
        """User + system CPU time so far, from /proc/<pid>/stat (all threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def url(self, path: str = "") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def target(self, path: str) -> dict:
        return {"host": HOST, "port": self.port, "path": path}

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


class Stack:
    """The processes of one scenario run; logs and data go under `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Process] = []

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def spawn(self, name: str, args: list[str], port: int, env: dict[str, str] | None = None,
              ready_path: str = "/healthz") -> Process:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                [sys.executable, *args], cwd=REPO, env=env or dict(os.environ),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        proc = Process(name, port, popen, log)
        self.procs.append(proc)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise StartError(f"{name} exited with {popen.returncode} at start; see {log}:\n{log.read_text()[-2000:]}")
            try:
                if call(port, "GET", ready_path, timeout=2)[0] == 200 and popen.poll() is None:
                    return proc  # (alive: not some other process that holds the port)
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not answer {ready_path} within {START_TIMEOUT:.0f} s; see {log}")

    def on_free_port(self, name: str, args: list[str], env: dict[str, str] | None = None, ready_path: str = "/healthz",
                     attempts: int = 3) -> Process:
        """Spawn with `{port}` in args/env filled by a free port; a port taken between the probe
        and the bind (other test runs share the machine) costs a retry, not the run."""
        for attempt in range(attempts):
            port = free_port()
            try:
                return self.spawn(name, [_fill(a, port) for a in args], port,
                                  {k: _fill(v, port) for k, v in env.items()} if env else None, ready_path)
            except StartError as exc:
                if attempt == attempts - 1 or "in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    def sink(self, name: str = "sink") -> Process:
        return self.on_free_port(name, ["-m", "bench.sink", "--port", "{port}"])

    def baseline(self) -> Process:
        return self.on_free_port("baseline", ["-m", "bench.baseline", "--port", "{port}"])

    def broker(self, **env: str) -> Process:
        data = self.workdir / "broker-data"
        shutil.rmtree(data, ignore_errors=True)  # a reused --workdir must not bring old subscriptions back
        # A developer's own BROKER_* settings (BROKER_CONFIG, ...) must not leak into the bench.
        settings = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        settings |= {
            "BROKER_HOST": HOST, "BROKER_PORT": "{port}", "BROKER_DATA_DIR": str(data),
            "BROKER_PUBLIC_URL": f"http://{HOST}:{{port}}", "LOG_LEVEL": "WARNING", **env,
        }
        proc = self.on_free_port("broker", ["-m", "broker"], settings, ready_path="/readyz")
        proc.data_dir = data
        return proc


def _fill(value: str, port: int) -> str:
    return value.replace("{port}", str(port))


def run_load(spec: dict, timeout: float) -> dict:
    """Run the load generator in its own process and return its JSON result."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.load", orjson.dumps(spec).decode()], cwd=REPO,
        capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed ({out.returncode}): {out.stderr.decode()[-2000:]}")
    return orjson.loads(out.stdout.strip().splitlines()[-1])
