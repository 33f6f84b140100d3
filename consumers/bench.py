"""`bench fold`: raw kafka-python read rate versus the end-to-end fold rate, same run.

Each measured phase runs in a fresh child process so its rate, CPU and peak memory are its
own.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

from kafka import KafkaConsumer

from consumers.kafka_client import assign_from_start, kafka_consumer
from consumers.producer import EventProducer
from profile_engine.contract import ContractError, parse_event


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _cpu_seconds_with_children() -> float:
    """CPU of this process and of its finished children (the fold's reader process)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def publish_generated(
    bootstrap_servers: str, topic: str, event_count: int, seed: int, log: IO[str]
) -> dict[str, Any]:
    """Generate and publish a synthetic stream; invalid lines go on the log as they are."""
    from profile_engine.synthetic import generate_events, to_line

    started = time.monotonic()
    invalid = 0
    last_ms = 0
    with EventProducer(bootstrap_servers, topic) as producer:
        for number, raw in enumerate(generate_events(event_count, seed), start=1):
            try:
                event = parse_event(raw)
            except ContractError:
                # Invalid events still reach the log (as a foreign producer might send them),
                # so the fold's dead-letter path is part of the measurement.
                invalid += 1
                producer.send_encoded(b"invalid", to_line(raw).encode(), last_ms, f"line {number}")
                continue
            last_ms = event.timestamp_us // 1000
            producer.send(event)
            if number % 100_000 == 0:
                log.write(f"published {number:,}/{event_count:,}\n")
        producer.flush()
    seconds = time.monotonic() - started
    return {"published": event_count, "invalid": invalid, "publish_seconds": round(seconds, 2)}


def _raw_read(bootstrap_servers: str, topic: str, out: Any) -> None:
    consumer: KafkaConsumer = kafka_consumer(bootstrap_servers)
    total = assign_from_start(consumer, topic)
    started = time.monotonic()
    cpu_started = time.process_time()
    seen = 0
    payload_bytes = 0
    while seen < total:
        for records in consumer.poll(timeout_ms=500).values():
            seen += len(records)
            for record in records:
                payload_bytes += len(record.value)
    seconds = time.monotonic() - started
    cpu = time.process_time() - cpu_started
    consumer.close()
    out.put(
        {
            "events": seen,
            "seconds": seconds,
            "cpu": cpu,
            "bytes": payload_bytes,
            "rss": _peak_rss_mb(),
        }
    )


def _fold(bootstrap_servers: str, topic: str, db_path: str, batch_size: int, out: Any) -> None:
    from consumers.consumer import ConsumeOptions, consume

    started = time.monotonic()
    cpu_started = _cpu_seconds_with_children()
    options = ConsumeOptions(once=True, batch_size=batch_size)
    stats = consume(db_path, bootstrap_servers, topic, None, options=options)
    seconds = time.monotonic() - started
    cpu = _cpu_seconds_with_children() - cpu_started
    out.put({**stats.as_dict(), "seconds": seconds, "cpu": cpu, "rss": _peak_rss_mb()})


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(*args, queue))
    child.start()
    result: dict[str, Any] = queue.get()
    child.join()
    return result


def run_fold_benchmark(
    event_count: int,
    seed: int,
    bootstrap_servers: str,
    batch_size: int,
    log: IO[str],
) -> dict[str, Any]:
    from consumers.topics import create_topics

    topic = f"bench-fold-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap_servers, topic, f"{topic}-dead-letters", partitions=6)
    log.write(f"publishing {event_count:,} generated events to {topic}\n")
    published = publish_generated(bootstrap_servers, topic, event_count, seed, log)
    log.write("measuring the raw read rate\n")
    raw = _in_child(_raw_read, bootstrap_servers, topic)
    log.write("measuring the fold rate\n")
    with tempfile.TemporaryDirectory() as scratch:
        db_path = str(Path(scratch) / "bench.duckdb")
        fold = _in_child(_fold, bootstrap_servers, topic, db_path, batch_size)
        db_mb = round(Path(db_path).stat().st_size / 1e6, 1)
    raw_rate = raw["events"] / raw["seconds"]
    fold_rate = fold["consumed"] / fold["seconds"]
    return {
        "events": event_count,
        "topic": topic,
        **published,
        "raw_read_events_per_s": round(raw_rate),
        "raw_read_seconds": round(raw["seconds"], 2),
        "fold_events_per_s": round(fold_rate),
        "fold_seconds": round(fold["seconds"], 2),
        "fold_vs_raw": round(fold_rate / raw_rate, 3),
        "folded": fold["folded"],
        "duplicates": fold["duplicates"],
        "dead_lettered": fold["dead_lettered"],
        "peak_rss_mb": fold["rss"],
        "raw_read_peak_rss_mb": raw["rss"],
        "db_mb": db_mb,
        "raw_read_cpu_us_per_event": round(raw["cpu"] * 1e6 / raw["events"], 2),
        "fold_cpu_us_per_event": round(fold["cpu"] * 1e6 / fold["consumed"], 2),
        "cpu_cores": os.cpu_count(),
    }
