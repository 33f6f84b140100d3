"""`status`: where the fold of a projection stands, whoever folds it."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from profile_engine.cli.common import (
    bootstrap_option,
    db_option,
    format_option,
    group_id_option,
    print_rows,
    topic_option,
)
from profile_engine.errors import first_line

PARTITION_COLUMNS = ("partition", "next_offset", "log_end_offset", "lag")


@click.command()
@db_option
@bootstrap_option
@topic_option
@group_id_option
@format_option("table", "json")
def status(
    db_path: str, bootstrap_servers: str, topic: str, group_id: str, output_format: str
) -> None:
    """Where the fold stands: per partition the next offset folded, the log's end and the lag.

    While `serve` holds the database this is its /api/status (the fold's state, counters
    since it started, restarts). Otherwise the offsets come from the projection, or, while
    `consume` holds it, from the consumer group it mirrors them to (--group-id, of --topic);
    the log's end from the broker (lag unknown while it does not answer).
    """
    document = _status(db_path, bootstrap_servers, topic, group_id)
    if output_format == "json":
        click.echo(json.dumps(document, indent=2, default=str))
        return
    _print_status(document)


def _status(db_path: str, bootstrap_servers: str, topic: str, group_id: str) -> dict[str, Any]:
    from profile_engine.server.client import ServerClient
    from profile_engine.server.discovery import running_server
    from projections.connection import lock_holder
    from projections.live import fold_position
    from projections.readonly import DatabaseBusy, read_projection

    try:
        folded_from, offsets, dead_letters = read_projection(db_path, fold_position)
    except DatabaseBusy as busy:
        server = running_server(db_path)
        if server is not None:
            return {"source": "server", "server": server.url, **ServerClient(server).status()}
        # DuckDB lets no reader beside the process that writes (`consume`): the offsets it
        # mirrors to the consumer group stand in for the projection's, of the topic it folds
        # (its lock says which; --topic and --group-id otherwise).
        _, holding = lock_holder(db_path)
        topic = holding.get("topic") or topic
        group_id = holding.get("group_id") or group_id
        document = _from_kafka(bootstrap_servers, topic, group_id, None)
        return {"source": "consumer_group", "state": "held", "error": None,
                "held_by": first_line(busy), **document}  # fmt: skip
    document = _from_kafka(bootstrap_servers, folded_from, group_id, offsets)
    return {
        "source": "projection",
        "state": "not_running",
        "error": None,
        **document,
        "dead_letters": dead_letters,
    }


def _from_kafka(
    bootstrap_servers: str,
    topic: str | None,
    group_id: str,
    offsets: dict[int, int] | None,
) -> dict[str, Any]:
    """The topic's partitions with ``offsets`` (None: the consumer group's) beside the log's
    end."""
    from consumers.group_offsets import GroupOffsets
    from consumers.kafka_client import BrokerUnavailable
    from profile_engine.server.runner import partition_lags, total_lag

    ends: dict[int, int] = {}
    broker: dict[str, Any] = {"bootstrap_servers": bootstrap_servers, "reachable": None}
    next_offsets = dict(offsets or {})
    if topic is not None:
        try:
            client = GroupOffsets(bootstrap_servers, topic, group_id)
            try:
                ends = client.end_offsets()
                if offsets is None:
                    next_offsets = client.committed()
            finally:
                client.close()
            broker.update(reachable=True, error=None)
        except BrokerUnavailable as error:
            broker.update(reachable=False, error=str(error))
    partitions = partition_lags(next_offsets, ends)
    return {"topic": topic, "group_id": group_id, "broker": broker, "lag": total_lag(partitions),
            "partitions": [asdict(p) for p in partitions]}  # fmt: skip


def _print_status(document: dict[str, Any]) -> None:
    broker = document["broker"]
    reachable = {True: "answers", False: f"unreachable: {broker.get('error')}", None: "not asked"}
    lines = [
        ("state", document["state"]),
        ("error", document.get("error")),
        ("from", _source(document)),
        ("held by", document.get("held_by")),
        ("topic", document.get("topic") or "none (folded from files)"),
        ("broker", f"{broker['bootstrap_servers']} {reachable[broker['reachable']]}"),
        ("lag", "unknown" if document.get("lag") is None else f"{document['lag']:,}"),
        ("fold restarts", document.get("fold_restarts")),
        ("dead letters", document.get("dead_letters")),
    ]
    since = document.get("since_start")
    if since:
        lines.append(("since start", ", ".join(f"{k} {v:,}" for k, v in since.items())))
    for name, value in lines:
        if value is not None:
            click.echo(f"{name + ':':<15}{value}")
    if document["partitions"]:
        rows = [[p[c] for c in PARTITION_COLUMNS] for p in document["partitions"]]
        print_rows(PARTITION_COLUMNS, rows, "table")


def _source(document: dict[str, Any]) -> str:
    if document["source"] == "server":
        return f"the server at {document['server']}"
    if document["source"] == "consumer_group":
        return (
            f"consumer group {document['group_id']} of topic {document['topic']} (the "
            "projection cannot be read while another process writes it)"
        )
    return "the projection (no process folds it)"


COMMANDS = [status]
