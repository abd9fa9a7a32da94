"""The Kafka jars: fetched once by Maven from ``infra/kafka/pom.xml`` into a cache folder keyed by
the pinned Kafka version (and the pom's content), then put on each node's classpath.

Java (>= 17, what Kafka 4 brokers need) and Maven must be installed; without them every command
that needs the cluster stops with one message that says what to install.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ridehail.cluster.errors import ClusterError
from ridehail.common.logging import get_logger
from ridehail.paths import infra_dir

log = get_logger(__name__)


def pom_path() -> Path:
    return infra_dir() / "kafka" / "pom.xml"


MIN_JAVA = 17
BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"
_COMPLETE = ".complete"


def kafka_version(pom: Path | None = None) -> str:
    pom = pom or pom_path()
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if match is None:
        raise ClusterError(f"{pom} has no <kafka.version> property")
    return match.group(1).strip()


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "ridehail"


def find_java() -> Path:
    """The ``java`` to run brokers with ($JAVA_HOME first, then PATH); it must be Java >= 17."""
    home = os.environ.get("JAVA_HOME")
    candidates = [Path(home) / "bin" / "java"] if home else []
    found = shutil.which("java")
    if found:
        candidates.append(Path(found))
    for java in candidates:
        if java.exists():
            major = java_major_version(java)
            if major >= MIN_JAVA:
                return java
            raise ClusterError(
                f"{java} is Java {major}; Apache Kafka 4 needs Java >= {MIN_JAVA} "
                "(e.g. apt-get install openjdk-17-jre-headless, or set JAVA_HOME)"
            )
    raise ClusterError(
        "Java is missing: the local Kafka cluster needs Java >= 17 "
        "(e.g. apt-get install openjdk-17-jre-headless, or set JAVA_HOME). "
        "Without Java, use the embedded broker (RIDEHAIL_BROKER=tansu, the default)."
    )


def java_major_version(java: Path) -> int:
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"cannot run {java} -version: {exc}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        raise ClusterError(f"cannot read the Java version from `{java} -version`: {out.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def find_maven() -> Path:
    found = shutil.which("mvn")
    if found is None:
        raise ClusterError(
            "Maven (mvn) is missing: it fetches the pinned Kafka jars from Maven Central once "
            f"(infra/kafka/pom.xml; e.g. apt-get install maven). Or put the jars in {default_cache_root()} yourself."
        )
    return Path(found)


@dataclass(frozen=True)
class KafkaRuntime:
    """Java plus a folder of Kafka jars: what it takes to run a node."""

    java: Path
    libs: Path
    version: str

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")


def cache_key(pom: Path | None = None) -> str:
    pom = pom or pom_path()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:10]
    return f"kafka-{kafka_version(pom)}-{digest}"


def ensure_jars(cache_root: Path | None = None, pom: Path | None = None, timeout_s: float = 900.0) -> Path:
    """The folder holding every jar of the pinned Kafka; runs Maven on the first call only.

    Several processes may call this at once (parallel test sessions): a file lock lets one fetch
    while the others wait, and the folder appears complete or not at all.
    """
    pom = pom or pom_path()
    root = cache_root or default_cache_root()
    target = root / cache_key(pom) / "libs"
    if (target / _COMPLETE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    lock_path = root / f"{cache_key(pom)}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _COMPLETE).exists():
            return target
        mvn = find_maven()
        version = kafka_version(pom)
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=target.parent if target.parent.exists() else root))
        log.info("kafka_jars_fetching", version=version, into=str(target))
        cmd = [
            str(mvn),
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)
            raise ClusterError(f"Maven did not fetch the Kafka jars within {timeout_s:.0f}s: {' '.join(cmd)}") from None
        if result.returncode != 0 or not (staging / f"kafka_2.13-{version}.jar").exists():
            shutil.rmtree(staging, ignore_errors=True)
            detail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            raise ClusterError(
                f"Maven could not fetch Apache Kafka {version} (exit {result.returncode}): "
                f"{' '.join(cmd)}\n" + "\n".join(detail)
            )
        (staging / _COMPLETE).write_text(version + "\n")
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(target)
        staging.rename(target)
        log.info("kafka_jars_ready", version=version, jars=len(list(target.glob("*.jar"))))
    return target


def kafka_runtime(cache_root: Path | None = None) -> KafkaRuntime:
    """Check Java first (fast, and the clearer message), then make sure the jars are there."""
    java = find_java()
    return KafkaRuntime(java=java, libs=ensure_jars(cache_root), version=kafka_version())
