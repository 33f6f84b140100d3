"""What the local broker runs with: Java, server.properties and the log4j 2 configuration."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from consumers.broker_fetch import BrokerError
from consumers.broker_process import HOST

MIN_JAVA = 17


def server_properties(port: int, controller_port: int, storage_dir: Path) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "log.dirs": str(storage_dir),
        "num.partitions": "6",
        # The log is the source of truth and events carry their own (often old) timestamps:
        # time-based retention would silently delete history the projections are built from.
        "log.retention.ms": "-1",
        "auto.create.topics.enable": "false",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        # 50 offsets partitions (the default) make the first consumer group slow to start.
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests and the CLI start consumers one at a time; waiting 3 s for more is pure delay.
        "group.initial.rebalance.delay.ms": "0",
    }
    lines = ["# Written by profile-engine on every broker start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def log4j_properties(server_log: Path) -> str:
    return f"""# Written by profile-engine: the broker logs to a file, never to the console.
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {server_log}
appender.file.filePattern = {server_log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def find_java() -> str:
    """$JAVA_HOME/bin/java or java on PATH, checked to be new enough for Kafka 4."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if java is None:
        raise BrokerError(f"Java is not installed; Kafka needs Java {MIN_JAVA} or newer")
    version = java_major_version(java)
    if version is not None and version < MIN_JAVA:
        raise BrokerError(f"Java {version} found at {java}; Kafka needs Java {MIN_JAVA} or newer")
    return java


def java_major_version(java: str) -> int | None:
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    return int(match.group(2) or 0) if major == 1 else major
