"""A real single-node Apache Kafka broker (KRaft, broker+controller) run from Maven jars.

No Docker: the jars come from Maven Central (see ``consumers.broker_fetch``), the storage is
formatted with ``kafka.tools.StorageTool`` and ``kafka.Kafka`` runs as a detached JVM on the
loopback interface. Everything the broker owns lives in one data folder: ``server.properties``,
``broker.json`` (cluster id and ports), ``broker.pid``, ``kraft/`` (the log) and ``logs/``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from consumers.broker_config import find_java, log4j_properties, server_properties
from consumers.broker_fetch import BrokerError, KafkaJars
from consumers.broker_process import (
    HOST,
    accepts_connections,
    free_port,
    looks_like_broker,
    pid_alive,
    port_in_use,
    send_signal,
)

__all__ = [
    "DEFAULT_PORT",
    "BrokerError",
    "BrokerStatus",
    "KafkaJars",
    "LocalBroker",
    "default_data_dir",
    "default_port",
    "free_port",
]

DEFAULT_PORT = 9092
HEAP = "512m"
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0
PROBE_TIMEOUT_MS = 3000
STATE_NAME = "broker.json"


def default_data_dir() -> Path:
    """$PROFILE_ENGINE_KAFKA_DIR or .kafka/ in the current directory (gitignored)."""
    return Path(os.environ.get("PROFILE_ENGINE_KAFKA_DIR") or ".kafka")


def default_port(data_dir: Path) -> int:
    """$PROFILE_ENGINE_KAFKA_PORT, else the port the data dir last ran on, else 9092."""
    configured = os.environ.get("PROFILE_ENGINE_KAFKA_PORT")
    if configured:
        return int(configured)
    remembered = _read_state(data_dir / STATE_NAME).get("port")
    return int(remembered) if remembered else DEFAULT_PORT


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    answering: bool
    pid: int | None
    bootstrap_servers: str
    data_dir: Path

    @property
    def healthy(self) -> bool:
        return self.running and self.answering

    def describe(self) -> str:
        if self.healthy:
            return (
                f"broker running (pid {self.pid}) at {self.bootstrap_servers}, data {self.data_dir}"
            )
        if self.running:
            return (
                f"broker process {self.pid} runs but does not answer at {self.bootstrap_servers}; "
                f"see {self.data_dir / 'logs' / 'server.log'}"
            )
        return f"no broker running for data dir {self.data_dir}"


@dataclass(frozen=True)
class StartResult:
    already_running: bool
    pid: int
    seconds: float
    bootstrap_servers: str


class LocalBroker:
    """One broker+controller Kafka node whose state lives in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        jars: KafkaJars | None = None,
        heap: str = HEAP,
    ) -> None:
        self.data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
        self.port = port if port is not None else default_port(self.data_dir)
        self._controller_port = controller_port
        self.jars = jars or KafkaJars.default()
        self.heap = heap
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- paths -------------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def state_file(self) -> Path:
        return self.data_dir / STATE_NAME

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def console_log(self) -> Path:
        return self.log_dir / "console.log"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "kraft"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    # -- lifecycle ---------------------------------------------------------------------------
    def fetch(self) -> bool:
        return self.jars.fetch()

    def start(
        self, timeout: float = START_TIMEOUT_SECONDS, stop_with_owner: bool = False
    ) -> StartResult:
        """Start the broker and wait until it answers a metadata request.

        A broker that already runs from this data dir is left alone. With ``stop_with_owner``
        a watchdog stops the broker when the calling process dies (used by the test fixture).
        """
        started = time.monotonic()
        pid = self.running_pid()
        if pid is not None:
            # The running broker keeps the port it was started with, whatever was asked now.
            self.port = int(_read_state(self.state_file).get("port", self.port))
            self._wait_until_answering(pid, timeout)
            return StartResult(True, pid, time.monotonic() - started, self.bootstrap_servers)
        java = find_java()
        self.jars.fetch()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        state = self._load_or_create_state()
        self._check_ports_free(state["controller_port"])
        self._write_configuration(state["controller_port"])
        if not (self.storage_dir / "meta.properties").is_file():
            self._format_storage(java, state["cluster_id"])
        pid = self._launch(java)
        if stop_with_owner:
            self._start_watchdog(pid)
        self._wait_until_answering(pid, timeout)
        return StartResult(False, pid, time.monotonic() - started, self.bootstrap_servers)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
        """SIGTERM, wait for a clean shutdown, SIGKILL after ``timeout``; True if it ran."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        send_signal(pid, signal.SIGTERM)
        if not self._wait_for_exit(pid, timeout):
            send_signal(pid, signal.SIGKILL)
            self._wait_for_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        self._reap_watchdog()
        return True

    def status(self) -> BrokerStatus:
        pid = self.running_pid()
        answering = pid is not None and self.answers()
        return BrokerStatus(pid is not None, answering, pid, self.bootstrap_servers, self.data_dir)

    def running_pid(self) -> int | None:
        """The pid of this data dir's broker if that process is alive and is a Kafka broker."""
        try:
            pid = int(self.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
        if not self._alive(pid) or not looks_like_broker(pid, self.properties_file):
            return None
        return pid

    def answers(self, timeout_ms: int = PROBE_TIMEOUT_MS) -> bool:
        """True when the broker returns cluster metadata that lists at least one broker."""
        # A refused TCP connect answers "no" at once; the Kafka client would retry for seconds.
        if not accepts_connections(HOST, self.port):
            return False
        return probe_bootstrap(self.bootstrap_servers, timeout_ms)

    # -- steps -------------------------------------------------------------------------------
    def _load_or_create_state(self) -> dict[str, str | int]:
        state = _read_state(self.state_file)
        formatted = (self.storage_dir / "meta.properties").is_file()
        if not formatted or "controller_port" not in state:
            # The controller endpoint is written into the formatted quorum, so it is chosen
            # once per data dir; the client port may change from run to run.
            state = {
                "cluster_id": new_cluster_id(),
                "controller_port": self._controller_port or self._pick_controller_port(),
                "kafka_version": self.jars.version,
            }
            shutil.rmtree(self.storage_dir, ignore_errors=True)
        elif self._controller_port and self._controller_port != state["controller_port"]:
            raise BrokerError(
                f"data dir {self.data_dir} was formatted with controller port "
                f"{state['controller_port']}; use a new --data-dir for another one"
            )
        state["port"] = self.port
        self.state_file.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        return state

    def _pick_controller_port(self) -> int:
        preferred = self.port + 1
        return preferred if not port_in_use(preferred) else free_port()

    def _check_ports_free(self, controller_port: int | str) -> None:
        for port, role in ((self.port, "client"), (int(controller_port), "controller")):
            if port_in_use(port):
                raise BrokerError(
                    f"port {port} on {HOST} ({role} listener) is in use by another process; "
                    "choose another with --port or stop whatever listens there"
                )

    def _write_configuration(self, controller_port: int | str) -> None:
        self.properties_file.write_text(
            server_properties(self.port, int(controller_port), self.storage_dir), encoding="utf-8"
        )
        (self.data_dir / "log4j2.properties").write_text(
            log4j_properties(self.server_log), encoding="utf-8"
        )

    def _jvm(self, java: str) -> list[str]:
        return [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            f"-XX:ErrorFile={self.log_dir / 'hs_err_%p.log'}",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.log_dir}",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            self.jars.classpath,
        ]

    def _format_storage(self, java: str, cluster_id: int | str) -> None:
        command = [
            *self._jvm(java),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            str(cluster_id),
            "-c",
            str(self.properties_file),
        ]
        # A JVM that dies while the machine is busy is worth one more try; a second failure
        # is reported. --ignore-formatted makes the retry safe after a partial format.
        for attempt in (1, 2):
            retry_flags = ["--ignore-formatted"] if attempt == 2 else []
            result = subprocess.run(
                [*command, *retry_flags],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                return
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise BrokerError(
            "formatting Kafka storage failed: " + (detail[-1] if detail else "no output")
        )

    def _launch(self, java: str) -> int:
        command = [*self._jvm(java), "kafka.Kafka", str(self.properties_file)]
        with self.console_log.open("ab") as console:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # no Ctrl-C from the terminal that started it
                close_fds=True,
            )
        self.pid_file.write_text(f"{self._process.pid}\n", encoding="ascii")
        return self._process.pid

    def _start_watchdog(self, broker_pid: int) -> None:
        self._watchdog = subprocess.Popen(
            [sys.executable, "-m", "consumers.broker_watchdog", str(os.getpid()), str(broker_pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )

    def _reap_watchdog(self) -> None:
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
            self._watchdog = None

    def _wait_until_answering(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(
                    f"the broker exited during start-up: {_last_error(self.server_log)}; "
                    f"see {self.server_log} and {self.console_log}"
                )
            if self.answers():
                return
            time.sleep(0.25)
        raise BrokerError(
            f"the broker (pid {pid}) did not answer at {self.bootstrap_servers} within "
            f"{timeout:.0f}s; see {self.server_log}"
        )

    def _wait_for_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(pid):
                return True
            time.sleep(0.1)
        return not self._alive(pid)

    def _alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None  # also reaps our own child
        return pid_alive(pid)


def probe_bootstrap(bootstrap_servers: str, timeout_ms: int = PROBE_TIMEOUT_MS) -> bool:
    """True when a metadata request to ``bootstrap_servers`` lists at least one live broker."""
    from kafka import KafkaAdminClient

    # A broker that is still booting is the expected case here, not an error worth logging.
    with _quiet_logger("kafka"):
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap_servers,
                bootstrap_timeout_ms=timeout_ms,
                request_timeout_ms=timeout_ms,
                client_id="profile-engine-probe",
            )
        except Exception:  # any failure to connect means "not answering yet"
            return False
        try:
            return bool(admin.describe_cluster().get("brokers"))
        except Exception:
            return False
        finally:
            admin.close()


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _read_state(state_file: Path) -> dict[str, str | int]:
    try:
        state: dict[str, str | int] = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state


def new_cluster_id() -> str:
    # As Kafka's own Uuid.randomUuid: an id starting with "-" would be read as an option by
    # kafka-storage's argument parser (about one id in 64), so draw again.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _last_error(log_path: Path) -> str:
    """The broker's last ERROR line, with the exception that follows it (the actual cause)."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "no broker log was written"
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if "] ERROR " in line or "] FATAL " in line:
            message = line.split("] ", 1)[1].rsplit(" (", 1)[0]
            cause = lines[index + 1] if index + 1 < len(lines) else ""
            if cause and not cause.startswith(("[", "\t")):
                message = f"{message}: {cause}"
            return message[:400]
    return "no ERROR line in the broker log"
