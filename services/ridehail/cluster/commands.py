"""``ridehail kafka up|status|fetch``: a local replicated Apache Kafka cluster in the foreground."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    kafka_app = typer.Typer(
        help="A local Apache Kafka cluster (KRaft, one JVM per node, RF 3, min.insync.replicas=2).",
        no_args_is_help=True,
    )
    app.add_typer(kafka_app, name="kafka")

    @kafka_app.command("up")
    def kafka_up(
        brokers: int = typer.Option(
            None, "--brokers", "-n", min=1, max=9, help="Nodes (default RIDEHAIL_KAFKA_BROKERS, 3)."
        ),
        heap_mb: int = typer.Option(
            None, "--heap-mb", min=192, help="Java heap per node (default RIDEHAIL_KAFKA_HEAP_MB)."
        ),
        fresh: bool = typer.Option(False, "--fresh", help="Delete the cluster's data first (every record is lost)."),
    ) -> None:
        """Format (first time), start and watch a local cluster; print its bootstrap; Ctrl-C stops it."""
        import shutil

        from ridehail.cluster.cluster import running_cluster
        from ridehail.cluster.errors import ClusterError
        from ridehail.cluster.settings import ClusterSettings
        from ridehail.cluster.stack import ManagedCluster, cluster_from_settings
        from ridehail.common.logging import configure_logging
        from ridehail.common.settings import load_settings

        settings = load_settings(ClusterSettings)
        configure_logging("WARNING", settings.log_format, service="kafka")
        root = settings.kafka_state_dir
        found = running_cluster(root)
        if found is not None:
            typer.echo(
                f"a local Kafka cluster already runs from {root} "
                f"(pids {found['pids']}, bootstrap {found['bootstrap']})",
                err=True,
            )
            raise typer.Exit(1)
        if fresh and root.exists():
            shutil.rmtree(root)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda *_: stop.set())
        cluster = cluster_from_settings(settings, brokers, heap_mb)
        managed = ManagedCluster(bootstrap="", cluster=cluster, say=typer.echo)
        code = 0
        try:
            replicas, min_isr = cluster.replication
            typer.echo(
                f"starting {cluster.brokers} Kafka node(s) (KRaft, broker+controller each): replication factor "
                f"{replicas}, min.insync.replicas {min_isr}, unclean leader election off; data under {root}"
            )
            seconds = cluster.start()
            rss = cluster.rss_mb()
            typer.echo(f"healthy in {seconds:.1f}s; controller: node {cluster.quorum_leader()}")
            typer.echo(f"node RSS: {', '.join(f'{i}: {mb:.0f} MB' for i, mb in rss.items())}")
            typer.echo(f"bootstrap: {cluster.bootstrap}")
            typer.echo(
                f"use it:    RIDEHAIL_KAFKA_BOOTSTRAP={cluster.bootstrap} ridehail up   (Ctrl-C here stops the cluster)"
            )
            while not stop.wait(1.0):
                if not managed.tick():
                    code = 1
                    break
        except ClusterError as exc:
            typer.echo(f"ridehail kafka up failed: {exc}", err=True)
            code = 2
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
            typer.echo("stopping the Kafka nodes")
            cluster.close()
            typer.echo("stopped")
        raise typer.Exit(code)

    @kafka_app.command("status")
    def kafka_status() -> None:
        """Show the local cluster run from the state folder: nodes, controller, partitions out of sync."""
        from ridehail.cluster.cluster import LAYOUT_FILE, running_cluster
        from ridehail.cluster.settings import ClusterSettings
        from ridehail.common.settings import load_settings

        settings = load_settings(ClusterSettings)
        root = settings.kafka_state_dir
        if not (root / LAYOUT_FILE).exists():
            typer.echo(f"no local Kafka cluster under {root} (start one with `ridehail kafka up`)")
            raise typer.Exit(1)
        layout = json.loads((root / LAYOUT_FILE).read_text())
        typer.echo(
            f"cluster {layout['cluster_id']} ({layout['brokers']} nodes, Kafka {layout.get('kafka_version')}) at {root}"
        )
        found = running_cluster(root)
        if found is None:
            typer.echo("not running")
            raise typer.Exit(1)
        from confluent_kafka.admin import AdminClient

        conf: dict[str, Any] = {"bootstrap.servers": found["bootstrap"], "log_level": 0, "error_cb": lambda _e: None}
        admin = AdminClient(conf)
        md = admin.list_topics(timeout=5)
        lagging = [
            f"{t}[{p}]"
            for t, tm in md.topics.items()
            for p, pm in tm.partitions.items()
            if set(pm.isrs) != set(pm.replicas)
        ]
        typer.echo(f"bootstrap: {found['bootstrap']}")
        typer.echo(f"brokers registered: {sorted(md.brokers)}; processes alive: {found['pids']}")
        typer.echo(f"topics: {len(md.topics)}; partitions out of sync: {len(lagging)} {lagging[:10]}")

    @kafka_app.command("fetch")
    def kafka_fetch() -> None:
        """Fetch the pinned Kafka jars with Maven into the cache (what `kafka up` does the first time)."""
        from ridehail.cluster.errors import ClusterError
        from ridehail.cluster.jars import ensure_jars, find_java, kafka_version
        from ridehail.cluster.settings import ClusterSettings
        from ridehail.common.settings import load_settings

        settings = load_settings(ClusterSettings)
        try:
            java = find_java()
            libs = ensure_jars(settings.kafka_cache_dir)
        except ClusterError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        typer.echo(f"Apache Kafka {kafka_version()}: {len(list(libs.glob('*.jar')))} jars in {libs}; java: {java}")
