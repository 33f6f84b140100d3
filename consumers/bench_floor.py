"""The CPU floor of a fold: what the stages no design can skip cost, each measured alone.

Any fold into these projections must read the records from Kafka, decode their Avro with
fastavro, run the fold (plain Python, by design) and write the final tables, with their
lookup indexes, to a DuckDB file. Each stage is timed alone here, in CPU seconds, on the
same topic and with the same rows the fold wrote; their sum is a lower bound on the CPU an
event costs. It leaves out everything a real pipeline adds (building typed events, moving
them between processes, building Arrow rows, rewriting rows a later batch changes, the
broker's own CPU), so ``cores / floor`` is a generous ceiling on any fold's rate on this
machine with these parts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from consumers.codec import AvroCodec, DecodeError
from consumers.consumer import paused_full_gc
from consumers.kafka_client import assign_from_start, kafka_consumer
from consumers.ordering import PartitionMerger
from consumers.records import RawRecord, block_consumer
from profile_engine.events import ProfileEvent
from profile_engine.fold import ProfileFold
from projections.store import ProjectionStore


def cpu_cores() -> int:
    """The cores this process may run on (what a pipeline could use in parallel)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_seconds(work: Callable[[], Any]) -> tuple[float, Any]:
    """CPU time of the whole process (DuckDB's threads included) while ``work`` runs."""
    started = time.process_time()
    result = work()
    return time.process_time() - started, result


def read_records(bootstrap_servers: str, topic: str) -> list[RawRecord]:
    """Every record of the topic, fetched and parsed as the fold's reader does."""
    consumer = block_consumer(kafka_consumer(bootstrap_servers))
    try:
        remaining = assign_from_start(consumer, topic)
        records: list[RawRecord] = []
        while remaining > 0:
            for blocks in consumer.poll(timeout_ms=500).values():
                for block in blocks:
                    records.extend(block.records)
                    remaining -= len(block.records)
        return records
    finally:
        consumer.close()


def in_fold_order(records: list[RawRecord]) -> list[RawRecord]:
    """The records in the consumer's merged order (the fold's cost depends a little on it)."""
    by_partition: dict[int, list[RawRecord]] = {}
    for record in records:
        by_partition.setdefault(record[0], []).append(record)
    ends = {p: rs[-1][1] + 1 for p, rs in by_partition.items()}  # each list is in offset order
    merger = PartitionMerger(ends, dict.fromkeys(by_partition, 0))
    for partition, partition_records in by_partition.items():
        merger.add(partition, partition_records)
    return list(merger.drain())


def avro_decode(codec: AvroCodec, records: list[RawRecord]) -> int:
    """fastavro alone: each value to its record dict, no contract checks, no typed event."""
    decoded = 0
    for record in records:
        value = record[4]
        if value is None:
            continue
        try:
            codec.read_record(value)
            decoded += 1
        except DecodeError:
            continue
    return decoded


def typed_events(codec: AvroCodec, records: list[RawRecord]) -> list[ProfileEvent]:
    """The valid events, in the order the consumer folds them."""
    values = (r[4] for r in in_fold_order(records) if r[4] is not None)
    return [e for e in codec.decode_many(values) if not isinstance(e, DecodeError)]


def fold_all(events: list[ProfileEvent], batch_size: int) -> ProfileFold:
    """The fold alone, draining its changes per batch, with garbage collection handled as the
    consumer handles it (see FoldGc)."""
    fold = ProfileFold()
    with paused_full_gc() as fold_gc:
        for start in range(0, len(events), batch_size):
            batch = events[start : start + batch_size]
            fold.apply_all(batch)
            fold.drain_changes()
            fold_gc.after_batch(len(batch))
    return fold


def final_tables(db_path: str) -> dict[str, pa.Table]:
    """The base tables of a projection file, as Arrow (what a single write would insert)."""
    con = duckdb.connect(db_path, read_only=True)
    try:
        names = [
            row[0]
            for row in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
            ).fetchall()
        ]
        return {name: con.sql(f'SELECT * FROM "{name}"').to_arrow_table() for name in names}
    finally:
        con.close()


def write_once(tables: dict[str, pa.Table], db_path: str) -> None:
    """Every row written once, in one transaction, then the lookup indexes and a checkpoint:
    the least a DuckDB write of these projections can do."""
    store = ProjectionStore(db_path)
    try:
        store.drop_indexes()
        con = store.con
        con.execute("BEGIN TRANSACTION")
        for name, table in tables.items():
            con.execute(f'DELETE FROM "{name}"')  # the store's own meta rows
            con.register("_rows", table)
            con.execute(f'INSERT INTO "{name}" SELECT * FROM _rows')
            con.unregister("_rows")
        con.execute("COMMIT")
        store.create_indexes()
        con.execute("CHECKPOINT")
    finally:
        store.close()


def measure_floor(
    bootstrap_servers: str, topic: str, folded_db: str, scratch: Path, batch_size: int
) -> dict[str, Any]:
    """Per-event CPU microseconds of each unavoidable stage, their total, and the ceiling."""
    read_s, records = _cpu_seconds(lambda: read_records(bootstrap_servers, topic))
    events = len(records)
    codec = AvroCodec()
    decode_s, _ = _cpu_seconds(lambda: avro_decode(codec, records))
    typed = typed_events(codec, records)
    fold_s, _ = _cpu_seconds(lambda: fold_all(typed, batch_size))
    tables = final_tables(folded_db)
    write_s, _ = _cpu_seconds(lambda: write_once(tables, str(scratch / "floor.duckdb")))
    per_event = {
        "kafka_read": read_s,
        "avro_decode": decode_s,
        "fold": fold_s,
        "duckdb_write": write_s,
    }
    floor_us = {stage: round(s * 1e6 / events, 2) for stage, s in per_event.items()}
    total_us = sum(per_event.values()) * 1e6 / events
    cores = cpu_cores()
    return {
        "cpu_cores": cores,
        "floor_cpu_us_per_event": {**floor_us, "total": round(total_us, 2)},
        "floor_events_per_s": round(cores * 1e6 / total_us),
    }
