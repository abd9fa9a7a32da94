"""Every ``ridehail bench ...`` command. Each runs real processes and writes JSON results (with the
machine's load) to ``--json``; none is part of the test command's pass/fail run."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ridehail.bench.experiments import commands as experiments

ADMIN_URL_OPTION = typer.Option(
    None,
    "--admin-url",
    help="Postgres where a throw-away database may be created (dropped afterwards). Default: "
    "SCRATCH_POSTGRES_URL, RIDEHAIL_DATABASE_URL's server, 127.0.0.1:5432, else a throw-away local server.",
)


def print_result(result: object, json_path: Path | None) -> None:
    """The results as JSON on stdout, and where the file went."""
    typer.echo(json.dumps(result, indent=2))
    if json_path:
        typer.echo(f"written to {json_path}")


def instance_counts(instances: str) -> tuple[int, ...]:
    """``--instances 1,2,4`` as counts, or a usage error."""
    try:
        counts = tuple(int(x) for x in instances.split(","))
    except ValueError:
        raise typer.BadParameter(f"--instances wants counts like 1,2,4, not {instances!r}") from None
    if not counts or min(counts) < 1:
        raise typer.BadParameter("--instances wants counts of at least 1")
    return counts


def register(bench: typer.Typer) -> None:
    experiments.register(bench)

    @bench.command("auth")
    def bench_auth(
        json_path: Path = typer.Option(Path("docs/bench/auth.json"), "--json", help="Where to write the results."),
        clients: int = typer.Option(64, help="Concurrent clients for the /auth/me latency run."),
        me_requests: int = typer.Option(6400, help="Total /auth/me requests (after warm-up)."),
        logins: int = typer.Option(120, help="Logins to time (argon2-bound)."),
    ) -> None:
        """Login rate, in-process token verification rate, /auth/me p99 under concurrent clients."""
        from ridehail.bench.auth import run_bench
        from ridehail.harness.scratch import temporary_database

        with temporary_database(prefix="ridehail_bench_auth") as database_url:
            results = run_bench(database_url, json_path, clients=clients, me_requests=me_requests, logins=logins)
        for key in ("login_per_s", "verify_per_s", "me_p50_ms", "me_p99_ms", "me_rps"):
            typer.echo(f"{key:14} {results[key]}")
        typer.echo(f"written to {json_path}")

    @bench.command("gateway")
    def bench_gateway(
        drivers: int = typer.Option(10_000, min=1, help="Cars pinging once per second."),
        clients: int = typer.Option(100, min=1, help="Websocket clients watching the whole city."),
        seconds: float = typer.Option(20.0, min=2, help="Steady-state measurement time."),
        slow_seconds: float = typer.Option(60.0, min=2, help="How long a never-reading client stays connected."),
        raw_seconds: float = typer.Option(8.0, min=1, help="Plain websockets.broadcast comparison time."),
        bootstrap: str = typer.Option(None, help="Kafka bootstrap (default: a fresh embedded broker)."),
        json_path: Path = typer.Option(Path("docs/bench/gateway.json"), "--json", help="Where to write results."),
    ) -> None:
        """Live feed: ping -> websocket e2e latency, deliveries, slow-client impact, raw broadcast."""
        from ridehail.bench.gateway import run_bench, write_json

        result = run_bench(drivers, clients, seconds, slow_seconds, raw_seconds, bootstrap)
        write_json(json_path, result)
        for key, value in result.items():
            typer.echo(f"{key:40} {value}")
        typer.echo(f"written to {json_path}")

    @bench.command("matching")
    def bench_matching(
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        admin_url: str | None = ADMIN_URL_OPTION,
        ingest_drivers: int = typer.Option(10_000, help="Drivers in the ingest phase."),
        ingest_rate: float = typer.Option(150_000, help="Offered pings per second in the ingest phase."),
        ingest_seconds: float = typer.Option(10.0, help="Length of the ingest phase."),
        assign_drivers: int = typer.Option(1000, help="Available drivers in the assignment phase."),
        assign_rps: float = typer.Option(20.0, help="Ride requests per second (REST) in the assignment phase."),
        assign_seconds: float = typer.Option(15.0, help="Length of the assignment phase."),
        phase: list[str] = typer.Option(
            ["ingest", "drain", "assign", "solver", "compare"], "--phase", help="Phases to run (repeatable)."
        ),
        instances: str | None = typer.Option(
            None, help="Also run the scale phase for these instance counts, e.g. 1,2,4 (adds the list 'scale')."
        ),
        cpu_quota: float = typer.Option(
            0.25, min=0, max=64, help="Scale phase: CPU budget per instance in cores (cgroup quota; 0: none)."
        ),
        scale_drivers: int = typer.Option(50_000, min=1, help="Scale phase: drivers in the ingest backlog."),
        scale_rounds: int = typer.Option(6, min=1, help="Scale phase: pings per driver in the backlog."),
        scale_fleet: int = typer.Option(1000, min=1, help="Scale phase: parked drivers in the assignment part."),
        scale_requests: int = typer.Option(200, min=1, help="Scale phase: measured ride requests."),
        scale_rps: float = typer.Option(10.0, min=0.1, help="Scale phase: ride requests per second."),
    ) -> None:
        """Ingest rate, REST-to-assigned latency, batched solver time, greedy vs batched pickup ETA,
        lost and double-assigned (targets: >= 100k pings/s, p99 <= 50 ms, solve <= 100 ms, 0, 0);
        with --instances, the same work for several instances under one CPU budget each."""
        from ridehail.bench.cpu_quota import CpuQuotaUnavailable, check_cpu_quota
        from ridehail.bench.matching import run_bench
        from ridehail.bench.matching_scale import ScaleConfig
        from ridehail.common.logging import configure_logging

        configure_logging("WARNING")
        scale = None
        if instances:
            scale = ScaleConfig(
                instance_counts(instances),
                cpu_quota,
                scale_drivers,
                scale_rounds,
                scale_fleet,
                scale_requests,
                scale_rps,
            )
        try:
            if scale is not None and cpu_quota > 0:
                check_cpu_quota()  # fail now, not after the other phases ran
            result = run_bench(
                json_path,
                admin_url,
                ingest_drivers=ingest_drivers,
                ingest_rate=ingest_rate,
                ingest_seconds=ingest_seconds,
                assign_drivers=assign_drivers,
                assign_rps=assign_rps,
                assign_seconds=assign_seconds,
                phases=tuple(phase),
                scale=scale,
            )
        except CpuQuotaUnavailable as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        print_result(result, json_path)

    @bench.command("scale")
    def bench_scale(
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        admin_url: str | None = ADMIN_URL_OPTION,
        instances: str = typer.Option("1,2,4", help="Matching instance counts in one consumer group."),
        repeats: int = typer.Option(5, min=1, help="Runs of every count, interleaved."),
        cpu_quota: float = typer.Option(0.15, min=0.0, help="CPU cores per instance (cgroup quota; 0: none)."),
        drivers: int = typer.Option(10_000, min=1, help="Drivers in the backlog."),
        rounds: int = typer.Option(5, min=1, help="Pings per driver in the backlog."),
        fleet: int = typer.Option(1000, min=1, help="Parked drivers pinging every second (steady load)."),
        requests: int = typer.Option(60, min=1, help="Measured ride requests per run."),
        rps: float = typer.Option(10.0, min=0.1, help="Ride requests per second."),
    ) -> None:
        """Claim (3): 1, 2, 4 matching instances under the same CPU budget each, repeated and interleaved:
        throughput, consumer lag, assignment latency and mean pickup ETA."""
        from ridehail.bench.cpu_quota import CpuQuotaUnavailable, check_cpu_quota
        from ridehail.bench.experiments.scale_study import run_scale_study
        from ridehail.bench.matching_scale import ScaleConfig
        from ridehail.common.logging import configure_logging

        configure_logging("WARNING")
        cfg = ScaleConfig(instance_counts(instances), cpu_quota, drivers, rounds, fleet, requests, rps)
        try:
            if cpu_quota > 0:
                check_cpu_quota()
            result = run_scale_study(admin_url, cfg, repeats)
        except (CpuQuotaUnavailable, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result, indent=2) + "\n")
        print_result(result["summary"], json_path)

    @bench.command("claims")
    def bench_claims(
        results: Path = typer.Option(Path("docs/experiments"), help="Folder with ingest/outage/scale/reply JSON."),
        json_path: Path = typer.Option(None, "--json", help="Write the claims here (default RESULTS/claims.json)."),
        readme: Path = typer.Option(None, help="Rewrite the claims table in this README (between its markers)."),
    ) -> None:
        """The eight claims with verdicts derived from the experiments' results; optionally the README table."""
        from ridehail.bench.experiments.claims import ClaimsError, build_claims, write_readme_table

        try:
            claims = build_claims(results)
            if readme is not None:
                write_readme_table(readme, claims)
        except ClaimsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        target = json_path or results / "claims.json"
        target.write_text(json.dumps(claims, indent=2) + "\n")
        for c in claims:
            typer.echo(f"({c['id']}) {c['verdict']:9} {c['value']:g} {c['unit']}  {c['claim']}")
        typer.echo(f"written to {target}")

    @bench.command("offers")
    def bench_offers(
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        admin_url: str | None = ADMIN_URL_OPTION,
        drivers: int = typer.Option(300, help="Simulated drivers (answering offers)."),
        requests: int = typer.Option(150, help="Ride requests."),
        rps: float = typer.Option(5.0, help="Ride requests per second."),
        accept_probability: float = typer.Option(0.9, help="Probability that a free driver accepts."),
        offer_timeout_s: float = typer.Option(5.0, help="Matching's offer timeout."),
    ) -> None:
        """Driver offers end to end: acceptance rate, answer latency, request-to-assigned latency,
        offers per ride, double bookings (must be 0)."""
        from ridehail.bench.offers import run_offers_bench
        from ridehail.common.logging import configure_logging

        configure_logging("WARNING")
        result = run_offers_bench(
            json_path,
            admin_url,
            drivers=drivers,
            requests=requests,
            rps=rps,
            accept_probability=accept_probability,
            offer_timeout_s=offer_timeout_s,
        )
        print_result(result, json_path)

    @bench.command("pricing")
    def bench_pricing(
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        admin_url: str | None = ADMIN_URL_OPTION,
        drivers: int = typer.Option(10_000, help="Drivers sending pings in the consume phase."),
        pings_per_driver: int = typer.Option(20, help="Pings per driver in the consume phase."),
        requests: int = typer.Option(5_000, help="Ride requests in the consume phase."),
        clients: int = typer.Option(64, help="Concurrent quote clients."),
        seconds: float = typer.Option(15.0, help="Length of the quote phase (after a 2 s warm-up)."),
        phase: list[str] = typer.Option(["consume", "quotes"], "--phase", help="Phases to run (repeatable)."),
    ) -> None:
        """Surge events/s through the pricing consumer, whole-city recompute time, quote latency under
        concurrent clients against a real gateway (targets: >= 50,000 events/s, quote p99 <= 50 ms)."""
        from ridehail.bench.pricing import run_bench
        from ridehail.common.logging import configure_logging

        configure_logging("WARNING")
        result = run_bench(
            json_path,
            admin_url,
            drivers=drivers,
            pings_per_driver=pings_per_driver,
            requests=requests,
            clients=clients,
            seconds=seconds,
            phases=tuple(phase),
        )
        print_result(result, json_path)

    @bench.command("simulator")
    def bench_simulator(
        drivers: int = typer.Option(10_000, "--drivers", "-n", help="Fleet size."),
        seconds: float = typer.Option(20.0, "--seconds", help="Measured window, seconds."),
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        bootstrap: str = typer.Option(
            None, "--bootstrap", help="Kafka to use (default: start an embedded broker on a free port)."
        ),
        interval: float = typer.Option(1.0, "--interval", help="Seconds between pings of one driver."),
        warmup: float = typer.Option(10.0, "--warmup", help="Seconds to run before measuring (initial routing)."),
        seed: int = typer.Option(42, "--seed", help="Random seed."),
    ) -> None:
        """Fleet throughput, CPU and memory against the real broker (target: 10k drivers at 1 Hz,
        >= 9,500 pings/s, <= 0.6 core, <= 600 MB)."""
        from ridehail.bench.simulator import run_bench
        from ridehail.common.logging import configure_logging

        configure_logging("WARNING")
        result = run_bench(drivers, seconds, json_path, bootstrap, interval, warmup, seed)
        print_result(result, json_path)

    @bench.command("replay")
    def bench_replay(
        json_path: Path = typer.Option(..., "--json", help="Where to write the results (JSON)."),
        events: int = typer.Option(1_000_000, help="Records in the max-speed run."),
        timing_seconds: float = typer.Option(10.0, help="Length of the 1x timing run."),
        timing_rate: int = typer.Option(500, help="Records per second in the 1x timing run."),
        determinism: bool = typer.Option(True, help="Also run the record/replay state-hash check (needs Postgres)."),
        bootstrap: str | None = typer.Option(None, help="Use this broker instead of a fresh embedded one."),
    ) -> None:
        """File -> broker throughput at --speed max, timing error at 1x, state-hash match after a replay."""
        import json

        from ridehail.bench.replay import run_bench
        from ridehail.common.logging import configure_logging

        configure_logging("WARNING")
        results = run_bench(
            events=events,
            timing_seconds=timing_seconds,
            timing_rate=timing_rate,
            determinism=determinism,
            bootstrap=bootstrap,
            echo=typer.echo,
        )
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        typer.echo(json.dumps({k: results[k] for k in sorted(results) if not isinstance(results[k], dict)}, indent=2))
        typer.echo(f"wrote {json_path}")

    @bench.command("stack")
    def bench_stack(
        drivers: int = typer.Option(1_000, "--drivers", "-n", min=1, help="Fleet size of the stack."),
        rides_per_s: float = typer.Option(10.0, "--rides-per-s", min=0, help="Ride requests per second (REST)."),
        seconds: float = typer.Option(60.0, "--seconds", min=2, help="Measured window, seconds (after the warm-up)."),
        warmup: float = typer.Option(15.0, "--warmup", min=0, help="Seconds of load before measuring."),
        json_path: Path = typer.Option(None, "--json", help="Write the results here as JSON."),
        broker: str = typer.Option(
            "tansu", "--broker", help="tansu (embedded, the default of ridehail up) or kafka (local Apache Kafka)."
        ),
        kafka_brokers: int = typer.Option(1, "--kafka-brokers", min=1, max=9, help="Nodes, with --broker kafka."),
        settings: list[str] = typer.Option(
            [],
            "--set",
            help="NAME=VALUE: a ridehail setting for the stack's services, e.g. RIDEHAIL_PING_SLOTS=10 "
            "(repeatable; recorded in the JSON). The stack does not see the caller's RIDEHAIL_ environment variables.",
        ),
        admin_url: str | None = ADMIN_URL_OPTION,
    ) -> None:
        """The whole stack as `ridehail up` runs it: RSS and CPU by service, request -> first offer and
        GPS -> websocket client latency, consumer lag (targets: 1,000 drivers <= 600 MB; 3,000 drivers
        at 10 requests/s: offer p99 <= 100 ms, GPS p99 <= 150 ms, <= 1.2 cores)."""
        from ridehail.bench.stack import broker_env, parse_settings, run_stack_bench

        def say(line: str) -> None:
            typer.echo(line, err=True)

        try:
            broker_env(broker, kafka_brokers)  # a bad choice is an error before anything starts
            extra_env = parse_settings(settings)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        result = run_stack_bench(
            drivers,
            rides_per_s,
            seconds,
            warmup_s=warmup,
            admin_url=admin_url,
            extra_env=extra_env,
            broker=broker,
            kafka_brokers=kafka_brokers,
            say=say,
        )
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result, indent=2) + "\n")
        print_result(result, json_path)

    @bench.command("map")
    def bench_map(
        cars: int = typer.Option(10_000, min=1, help="Simulated cars, all in the page's view."),
        seconds: float = typer.Option(20.0, min=2, help="Measurement time once the cars are on the page."),
        renderer: str = typer.Option(
            "canvas", help="The car drawer: canvas (one canvas, the default) or markers (Leaflet circle markers)."
        ),
        warmup: float = typer.Option(3.0, min=0, help="Seconds between the fleet on the page and the measurement."),
        json_path: Path = typer.Option(Path("docs/bench/map.json"), "--json", help="Where to write the results."),
    ) -> None:
        """The live map in headless Chromium with CARS cars in view: fps, GPS -> browser p50/p99."""
        import signal
        import sys

        from ridehail.bench.map_browser import RENDERERS, run_bench, write_json

        if renderer not in RENDERERS:
            raise typer.BadParameter(f"--renderer wants one of {', '.join(RENDERERS)}")
        # a SIGTERM (a test's time-out) unwinds like Ctrl-C, so broker, gateway and simulator are stopped
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        result = run_bench(cars, seconds, renderer=renderer, warmup_s=warmup, progress=typer.echo)
        write_json(json_path, result)
        for key in ("cars", "cars_drawn", "fps", "gps_to_browser_p50_ms", "gps_to_browser_p99_ms", "renderer"):
            typer.echo(f"{key:24} {result[key]}")
        typer.echo(f"written to {json_path}")
