"""The processes of one scenario: the shipper and the aggregator (started, killed with SIGKILL,
stopped, run to completion), the chaos broker (deploy/kafka/kafka.sh on its own ports), and the
loglake.toml they all read."""

from __future__ import annotations

import atexit
import json
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

from .options import BIN, ROOT, Options

KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
RESERVED_PORTS = {19093, 19094, 19095}

_LIVE: set["Harness"] = set()


def cleanup_all() -> None:
    for h in list(_LIVE):
        h.cleanup()


atexit.register(cleanup_all)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without LOGLAKE_* overrides (they would change the generated config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGLAKE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def pid_dead(pid: int) -> bool:
    """Gone, or a zombie waiting to be reaped (its sockets and files are closed already)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    except OSError:
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True


class Deadline(Exception):
    pass


class Harness:
    """Every process of one scenario; ``cleanup`` kills whatever is left (also from atexit)."""

    def __init__(self, sdir: Path, deadline: float) -> None:
        self.sdir = sdir
        self.deadline = deadline
        self.logs = sdir / "proc"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.broker: Broker | None = None
        self.events: list[dict] = []
        self.t0 = time.monotonic()
        _LIVE.add(self)

    def note(self, what: str, **kw: object) -> None:
        self.events.append({"t": round(time.monotonic() - self.t0, 2), "event": what, **kw})

    def check_time(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise Deadline(f"time limit reached during {what}")

    def remaining(self, cap: float) -> float:
        return max(5.0, min(cap, self.deadline - time.monotonic() + 60))

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = (self.logs / f"{name}.log").open("ab")
        out.write(f"\n==== start {time.strftime('%H:%M:%S')} {shlex.join(argv)}\n".encode())
        out.flush()
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT,
                             start_new_session=True)
        out.close()
        self.procs[name] = p
        return p

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def kill9(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is not None and p.poll() is None:
            p.kill()
        if p is not None:
            p.wait(timeout=30)

    def terminate(self, name: str, timeout: float) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. The exit code, or None if it had to be killed."""
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is not None:
            return p.returncode
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)
            return None

    def run(self, name: str, argv: list[str], timeout: float) -> tuple[int, str]:
        """Run to completion; (exit code, its output). The output also goes to proc/<name>.log."""
        t = time.monotonic()
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT,
                               timeout=self.remaining(timeout), start_new_session=True)
            rc, out = r.returncode, r.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            rc, out = -999, (e.stdout or b"").decode(errors="replace") + "\n[chaos: timed out]"
        with (self.logs / f"{name}.log").open("a") as f:
            f.write(f"\n==== run {shlex.join(argv)} -> {rc} in {time.monotonic() - t:.1f}s\n{out}")
        return rc, out

    def cleanup(self) -> None:
        for name in list(self.procs):
            try:
                self.kill9(name)
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        if self.broker is not None:
            try:
                self.broker.down()
            except Exception:  # noqa: BLE001
                self.broker.kill9()
            self.broker = None
        _LIVE.discard(self)


class Broker:
    """The chaos broker: deploy/kafka/kafka.sh with its own ports and data directory."""

    def __init__(self, harness: Harness, data: Path, certs: Path) -> None:
        self.h = harness
        self.data = data
        self.certs = certs
        self.port, self.cport, self.sport = free_port(), free_port(), free_port()
        self.env = child_env({"KAFKA_PORT": str(self.port), "KAFKA_CONTROLLER_PORT": str(self.cport),
                              "KAFKA_SASL_PORT": str(self.sport), "KAFKA_DATA": str(data),
                              "LOGLAKE_CERTS": str(certs), "PYTHON": str(BIN / "python")})
        self.starts: list[float] = []

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.data / "kafka.pid"

    def _sh(self, action: str, timeout: float) -> tuple[int, str]:
        try:
            r = subprocess.run([str(KAFKA_SH), action], env=self.env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=timeout, start_new_session=True)
            rc, out = r.returncode, r.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            rc, out = -999, (e.stdout or b"").decode(errors="replace") + "\n[chaos: timed out]"
        with (self.h.logs / "kafka.sh.log").open("a") as f:
            f.write(f"\n==== kafka.sh {action} -> {rc}\n{out}")
        return rc, out

    def up(self) -> float:
        t = time.monotonic()
        rc, out = self._sh("up", 180)
        if rc != 0:
            raise RuntimeError(f"chaos broker did not start (kafka.sh up exit {rc}): {out.strip()[-600:]}")
        self.starts.append(round(time.monotonic() - t, 2))
        return self.starts[-1]

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def kill9(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        end = time.monotonic() + 30
        while not pid_dead(pid) and time.monotonic() < end:
            time.sleep(0.05)
        # A zombie (nobody has reaped it yet) would still answer kill -0: kafka.sh would think it runs.
        self.pidfile.unlink(missing_ok=True)

    def down(self) -> None:
        pid = self.pid()
        if pid is not None and pid_dead(pid):
            self.pidfile.unlink(missing_ok=True)
            return
        rc, _ = self._sh("down", 60)
        if rc != 0 or (pid is not None and not pid_dead(pid)):
            if pid is not None and not pid_dead(pid):
                os.kill(pid, signal.SIGKILL)
            self.pidfile.unlink(missing_ok=True)



# config ----------------------------------------------------------------------------

def toml_value(v: object) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, Path):
        v = str(v)
    return json.dumps(v)


def write_config(sdir: Path, opts: Options, broker: Broker | None) -> Path:
    certs = opts.certs
    sections: dict[str, dict[str, object]] = {
        "shipper": {"node_name": "chaos-node", "include": [str(sdir / "logs" / "**" / "*.log")],
                    "data_dir": sdir / "shipper", "poll_interval_ms": opts.poll_interval_ms,
                    "batch_max_wait_ms": 100, "multiline": ["java"], "multiline_flush_ms": opts.multiline_flush_ms},
        "spool": {"dir": sdir / "spool"},
        "aggregator": {"data_dir": sdir / "lake", "group_id": "chaos", "flush_interval_ms": 500},
    }
    if broker is not None:
        sections["shipper"] |= {"tls_cert_file": certs / "shipper.crt", "tls_key_file": certs / "shipper.key"}
        sections["aggregator"] |= {"tls_cert_file": certs / "aggregator.crt", "tls_key_file": certs / "aggregator.key"}
        sections["kafka"] = {"bootstrap_servers": broker.bootstrap, "topic": "chaos.logs", "partitions": 2,
                             "ca_file": certs / "ca.crt", "request_timeout_ms": 10000}
    for section, values in opts.overrides.items():
        sections.setdefault(section, {}).update(values)
    lines = []
    for name, values in sections.items():
        lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in values.items()), ""]
    path = sdir / "loglake.toml"
    path.write_text("\n".join(lines))
    return path

