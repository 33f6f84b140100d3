"""The live engine under load: read latency with concurrent clients, and the fold rate beside.

A generated projection (default 1M profiles, built like bench_queries.py) is served by
`profile-engine serve` while a producer process publishes to its topic at a steady rate
(default 5,000 events/s) on top of a backlog, so the fold works flat out. Each round is two
runs, each on a fresh copy of the projection, their order alternating from round to round
(``--rounds``, default 2: the second run of a round meets a warmer machine and a longer log,
so one round alone favours whichever came second):

- alone: the fold without readers;
- with readers: the same, while N client threads (default 8) ask /api/counts and
  /api/profiles/{id} in turn, each as fast as it is answered (closed loop: on 2 cores the
  clients and the server's request handling take a core from the fold), or each at
  ``--client-rate`` requests a second on average (people at a page: the load a dashboard
  puts on it). Paced clients arrive as independent people do (``--arrivals poisson``, the
  default: random gaps, exponentially distributed, each client with its own seeded stream);
  ``--arrivals together`` keeps every client on the same clock, so all N requests arrive in
  the same instant each period and the last waits behind the other N-1 (the worst case for
  latency, not how people use a page).

Reported, for each run in round order (``alone`` and ``with_readers`` are lists): the fold
rate (messages consumed per second while it was behind the log, from the end of its first
committed batch: that batch reads a cold file and is timed apart as first_batch_seconds) and,
with readers, p50/p99 latency of both endpoints as the clients timed them and as the server
did (``*_in_server``, from its ``Server-Timing`` header: without the network and the client
process's own waits); then the ratio of the fold rate with readers to alone, per round and
its median. Targets
from the issue: counts p99 <= 100 ms, profile p99 <= 20 ms, fold rate with readers >= 80% of
the rate alone.

Usage: python benchmarks/bench_serve.py [--profiles N] [--rate R] [--seconds S]
           [--backlog B] [--clients C] [--client-rate R] [--arrivals poisson|together]
           [--rounds N]
Uses PROFILE_ENGINE_BOOTSTRAP_SERVERS (default the local broker). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from itertools import islice
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench_queries import build_projection  # type: ignore[import-not-found]
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from read_path import lookup_keys  # type: ignore[import-not-found]

from consumers.codec import AvroCodec
from consumers.producer import EventProducer
from profile_engine.contract import ContractError, parse_event
from profile_engine.synthetic import generate_events
from projections.readonly import open_readonly

SEED = 17


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    if not ordered:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "requests": 0}
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(p99, 2),
        "requests": len(ordered),
    }


# -- the producer: a steady rate, in its own process ------------------------------------------


def encoded_events(first: int, count: int) -> list[tuple[bytes, bytes, int, str]]:
    """Generated events ``first .. first+count`` (valid ones), encoded before timing starts."""
    codec = AvroCodec()
    out = []
    rows = islice(generate_events(first + count * 2, SEED, invalid_rate=0.0), first, None)
    for row in rows:
        if len(out) == count:
            break
        try:
            event = parse_event(row)  # type: ignore[arg-type]
        except (ContractError, TypeError, ValueError):
            continue
        out.append(
            (event.partition_key().encode(), codec.encode(event), event.timestamp_us // 1000,
             event.event_id)
        )  # fmt: skip
    return out


def produce(
    bootstrap: str, topic: str, first: int, count: int, rate: int, ready: Connection
) -> None:
    messages = encoded_events(first, count)
    with EventProducer(bootstrap, topic) as producer:
        ready.send("ready")
        ready.recv()  # go
        started = time.monotonic()
        for number, (key, value, stamp, event_id) in enumerate(messages):
            due = started + number / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.send_encoded(key, value, stamp, event_id)
        producer.flush()
    ready.send(round(len(messages) / (time.monotonic() - started), 1))


# -- the readers: N threads with keep-alive connections, in their own process -----------------


def read(
    url: str, keys: list[str], clients: int, rate: float, arrivals: str, seconds: float,
    out: Connection,
) -> None:  # fmt: skip
    parsed = urllib.parse.urlsplit(url)
    stop_at = time.monotonic() + seconds
    samples: dict[str, list[float]] = {"counts": [], "profile": []}
    server_samples: dict[str, list[float]] = {"counts": [], "profile": []}
    lock = threading.Lock()
    errors = [0]

    def client(number: int) -> None:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        mine: dict[str, list[float]] = {"counts": [], "profile": []}
        mine_server: dict[str, list[float]] = {"counts": [], "profile": []}
        turn = number
        gaps = random.Random(SEED + number)
        next_at = time.monotonic()
        if rate > 0 and arrivals == "poisson":
            next_at += gaps.expovariate(rate)
        while time.monotonic() < stop_at:
            if rate > 0:  # paced, never catching up a burst of missed requests
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                gap = gaps.expovariate(rate) if arrivals == "poisson" else 1 / rate
                next_at = max(next_at, time.monotonic() - gap) + gap
            turn += 1
            if turn % 2:
                kind, path = "counts", "/api/counts?month=2026-01"
            else:
                kind = "profile"
                key = urllib.parse.quote(keys[turn % len(keys)], safe=":@")
                path = f"/api/profiles/{key}"
            started = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            elapsed = (time.perf_counter() - started) * 1000
            if response.status in (200, 404):
                mine[kind].append(elapsed)
                mine_server[kind].append(server_ms(response.getheader("Server-Timing")))
            else:
                errors[0] += 1
        connection.close()
        with lock:
            for kind, values in mine.items():
                samples[kind].extend(values)
                server_samples[kind].extend(mine_server[kind])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.send({"samples": samples, "server_samples": server_samples, "errors": errors[0]})


def server_ms(header: str | None) -> float:
    """The server's own time for an answer, from its ``Server-Timing: app;dur=<ms>``."""
    for part in (header or "").split(";"):
        if part.strip().startswith("dur="):
            return float(part.strip()[4:])
    raise SystemExit(f"the server sent no Server-Timing duration: {header!r}")


# -- one run ------------------------------------------------------------------------------------


def status(url: str) -> dict[str, Any]:
    host = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    connection.request("GET", "/api/status")
    document: dict[str, Any] = json.loads(connection.getresponse().read())
    connection.close()
    return document


def start_server(
    db: Path, bootstrap: str, topic: str, dead: str, batch_size: int | None
) -> tuple[subprocess.Popen[bytes], str]:
    command = [
        sys.executable, "-m", "profile_engine.cli.main", "serve", "--db", str(db), "--port", "0",
        "--bootstrap-servers", bootstrap, "--topic", topic, "--dead-letter-topic", dead,
        "--group-id", f"bench-serve-{uuid.uuid4().hex[:6]}",
    ]  # fmt: skip
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    process = subprocess.Popen(command, cwd=db.parent, stderr=subprocess.DEVNULL)
    record = Path(str(db) + ".server.json")
    while not record.exists():
        if process.poll() is not None:
            raise SystemExit(f"serve exited with {process.returncode}")
        time.sleep(0.2)
    info = json.loads(record.read_text())
    return process, f"http://{info['host']}:{info['port']}"


def one_run(
    base: Path, work: Path, bootstrap: str, topics: tuple[str, str], options: Any, first: int,
    keys: list[str] | None,
) -> dict[str, Any]:  # fmt: skip
    db = work / ("readers.duckdb" if keys else "alone.duckdb")
    shutil.copy(base, db)
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    count = options.rate * (options.seconds + 10)
    producer = ctx.Process(
        target=produce, args=(bootstrap, topics[0], first, count, options.rate, theirs)
    )
    producer.start()
    assert ours.recv() == "ready"
    started = time.monotonic()
    server, url = start_server(db, bootstrap, *topics, options.batch_size)
    while status(url)["state"] == "starting":  # loading the fold state
        time.sleep(0.5)
    result: dict[str, Any] = {"load_seconds": round(time.monotonic() - started, 1)}
    ours.send("go")
    # The first batch reads a cold file (the page cache and DuckDB's buffers are empty) and
    # takes several times longer than the next ones; both runs start their window after it,
    # so the ratio compares steady folding, not who paid the cold start.
    first_batch = time.monotonic()
    while status(url)["since_start"]["consumed"] == 0:
        time.sleep(0.2)
    result["first_batch_seconds"] = round(time.monotonic() - first_batch, 1)
    readers = None
    if keys:
        mine, theirs_read = ctx.Pipe()
        readers = ctx.Process(
            target=read,
            args=(
                url,
                keys,
                options.clients,
                options.client_rate,
                options.arrivals,
                options.seconds,
                theirs_read,
            ),
        )
        readers.start()
    window_start = time.monotonic()
    first_status = status(url)
    last = first_status
    behind_until = None
    while time.monotonic() - window_start < options.seconds:
        time.sleep(1.0)
        now = status(url)
        if now["lag"] and now["lag"] > 0:
            last = now
            behind_until = time.monotonic()
    consumed = last["since_start"]["consumed"] - first_status["since_start"]["consumed"]
    behind_seconds = (behind_until or window_start) - window_start
    result["fold_rate"] = round(consumed / behind_seconds, 1) if behind_seconds > 0 else None
    result["behind_the_log_seconds"] = round(behind_seconds, 1)
    final = status(url)
    result["lag_at_end"] = final["lag"]
    if final["state"] == "failed":
        # The server keeps answering reads after its fold stops (its stderr is not kept
        # here): figures of readers beside a stopped fold would look like a slow fold.
        server.send_signal(signal.SIGTERM)
        producer.terminate()
        raise SystemExit(f"the server's fold stopped: {final['error']}")
    if readers is not None:
        answer = mine.recv()
        readers.join()
        result["counts"] = percentiles(answer["samples"]["counts"])
        result["profile"] = percentiles(answer["samples"]["profile"])
        # The same requests as the server timed them (Server-Timing): without the network and
        # the client process's own waits (its threads share two cores and a GIL too).
        result["counts_in_server"] = percentiles(answer["server_samples"]["counts"])
        result["profile_in_server"] = percentiles(answer["server_samples"]["profile"])
        result["errors"] = answer["errors"]
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=300)
    producer.join()
    result["published_per_s"] = ours.recv() if ours.poll(5) else None
    return result


def create_topics(bootstrap: str) -> tuple[str, str]:
    names = (f"bench-serve-{uuid.uuid4().hex[:8]}", f"bench-serve-dead-{uuid.uuid4().hex[:8]}")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    config = {"retention.ms": "-1"}
    admin.create_topics(
        [NewTopic(names[0], 6, 1, topic_configs=config),
         NewTopic(names[1], 1, 1, topic_configs=config)]
    )  # fmt: skip
    admin.wait_for_topics(list(names), timeout_ms=30_000)
    admin.close()
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=5_000, help="events/s published")
    parser.add_argument("--seconds", type=int, default=60, help="measured window per run")
    parser.add_argument("--backlog", type=int, default=300_000, help="events waiting at start")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--client-rate", type=float, default=0.0,
        help="requests a second per client (default 0: as fast as answered)",
    )  # fmt: skip
    parser.add_argument(
        "--arrivals", choices=("poisson", "together"), default="poisson",
        help="paced clients: independent random gaps (default) or all on one clock",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=2, help="pairs of runs, their order alternating"
    )
    parser.add_argument("--lookups", type=int, default=500, help="profile keys sampled")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="serve's --batch-size (default: its own)"
    )
    options = parser.parse_args()
    bootstrap = os.environ.get("PROFILE_ENGINE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    figures: dict[str, Any] = {
        "profiles": options.profiles, "rate": options.rate, "seconds": options.seconds,
        "backlog": options.backlog, "clients": options.clients,
        "client_rate": options.client_rate or "as fast as answered", "cpus": os.cpu_count(),
        "arrivals": options.arrivals if options.client_rate else None,
        "batch_size": options.batch_size or "serve's default",
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = work / "base.duckdb"
        figures["build_seconds"] = round(build_projection(base, options.profiles, True), 1)
        con = open_readonly(str(base))
        keys = lookup_keys(con, options.lookups, seed=7)
        con.close()
        topics = create_topics(bootstrap)
        backlog = encoded_events(0, options.backlog)
        with EventProducer(bootstrap, topics[0]) as producer:
            for key, value, stamp, event_id in backlog:
                producer.send_encoded(key, value, stamp, event_id)
        offset = options.backlog * 2  # later runs publish later events of the same stream
        per_run = options.rate * (options.seconds + 10) * 2
        runs: dict[str, list[dict[str, Any]]] = {"alone": [], "with_readers": []}
        for round_number in range(options.rounds):
            order = (None, keys) if round_number % 2 == 0 else (keys, None)
            for readers_keys in order:
                result = one_run(base, work, bootstrap, topics, options, offset, readers_keys)
                offset += per_run
                runs["with_readers" if readers_keys else "alone"].append(result)
    figures.update(runs)
    ratios = [
        round(w["fold_rate"] / a["fold_rate"], 2)
        for a, w in zip(runs["alone"], runs["with_readers"], strict=True)
        if a["fold_rate"] and w["fold_rate"]
    ]
    figures["fold_rate_ratios"] = ratios
    figures["fold_rate_ratio"] = statistics.median(ratios) if ratios else None
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
