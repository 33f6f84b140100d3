"""Fetch the Apache Kafka jars from Maven Central with Maven into a cache folder outside git.

The cache holds one folder per Kafka version, ``kafka-<version>/libs/*.jar``. Maven writes into
``libs.partial`` and the folder is renamed only once every jar is there, so a half-finished
fetch is never mistaken for a complete one; a lock file keeps two fetches from racing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from profile_engine.errors import NeedsOperator

KAFKA_VERSION = "4.4.0"
LOG4J_VERSION = "2.26.1"
# Pinned because Maven 3.8's default binding of the dependency plugin (2.8) predates
# the options used here.
DEPENDENCY_PLUGIN_VERSION = "3.8.1"
MANIFEST_NAME = ".complete"


class BrokerError(NeedsOperator):
    """A broker set-up or run failure with a one-line message the user can act on."""


def cache_home() -> Path:
    """Root of the jar cache: $PROFILE_ENGINE_HOME or ~/.cache/profile-engine."""
    configured = os.environ.get("PROFILE_ENGINE_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path.home() / ".cache" / "profile-engine"


def kafka_version() -> str:
    """Kafka version to run: $PROFILE_ENGINE_KAFKA_VERSION or the tested default."""
    return os.environ.get("PROFILE_ENGINE_KAFKA_VERSION") or KAFKA_VERSION


def pom_xml(version: str) -> str:
    """A throw-away POM whose runtime dependencies are exactly the broker's classpath."""
    # Kafka 4.x logs through slf4j 1.7 to log4j 2, so the slf4j-1.x binding is the one it needs.
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.profile-engine</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


@dataclass(frozen=True)
class KafkaJars:
    """The jars of one Kafka version in the cache."""

    version: str
    home: Path

    @classmethod
    def default(cls) -> KafkaJars:
        return cls(kafka_version(), cache_home())

    @property
    def root(self) -> Path:
        return self.home / f"kafka-{self.version}"

    @property
    def libs(self) -> Path:
        return self.root / "libs"

    @property
    def classpath(self) -> str:
        # Java expands the trailing wildcard itself; the shell never sees it.
        return str(self.libs / "*")

    @property
    def fetch_log(self) -> Path:
        return self.root / "fetch.log"

    def is_complete(self) -> bool:
        manifest = self.libs / MANIFEST_NAME
        if not manifest.is_file():
            return False
        names = manifest.read_text(encoding="utf-8").split()
        return bool(names) and all((self.libs / name).is_file() for name in names)

    def fetch(self) -> bool:
        """Download the jars unless they are already complete; True when it downloaded."""
        if self.is_complete():
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.root / ".fetch.lock"):
            if self.is_complete():  # another process finished while we waited
                return False
            self._download()
        return True

    def _download(self) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                "Maven (mvn) is not installed; it is needed once to fetch the Kafka jars"
            )
        partial = self.root / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        pom = self.root / "pom.xml"
        pom.write_text(pom_xml(self.version), encoding="utf-8")
        command = [
            mvn,
            "-B",
            "-ntp",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ]
        started = time.monotonic()
        with self.fetch_log.open("w", encoding="utf-8") as log:
            result = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=False
            )
        if result.returncode != 0 or not partial.is_dir():
            raise BrokerError(
                f"fetching Kafka {self.version} jars with Maven failed (exit {result.returncode}): "
                f"{_first_error(self.fetch_log)}; full output in {self.fetch_log}"
            )
        jars = sorted(path.name for path in partial.glob("*.jar"))
        (partial / MANIFEST_NAME).write_text("\n".join(jars) + "\n", encoding="utf-8")
        shutil.rmtree(self.libs, ignore_errors=True)
        partial.rename(self.libs)
        with self.fetch_log.open("a", encoding="utf-8") as log:
            log.write(f"fetched {len(jars)} jars in {time.monotonic() - started:.1f}s\n")


def _first_error(log_path: Path) -> str:
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line.removeprefix("[ERROR]").strip() for line in lines if line.startswith("[ERROR]")]
    errors = [line for line in errors if line]
    return errors[0] if errors else "no error line in Maven's output"


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
