"""What checking one event against the contract costs: JSON (parse_event) and Avro (decode).

The events come from profile_engine.synthetic.generate_events (the realistic stream: identify,
track with purchases, consent, bounce, subscription, ccpa, a sprinkling of invalid events and
re-sends). Non-JSON items are left out. Each figure is one pass over the stream after a
warm-up on another stream, with the identifier caches emptied first, as they are when a
`publish` or `rebuild` starts:

- parse_event: JSON object -> domain event, identifiers normalised, with the attribute
  registry's trait check as `publish` runs it; then without it (parse_event's default),
  from cold caches and again warm;
- avro decode: a single-object Avro message -> domain event (AvroCodec.decode), over the same
  stream encoded once beforehand.

CPU time of this process (time.process_time) is reported beside wall time: the machine is
shared, and CPU time is less disturbed by other work. No broker, no files. As in the
streaming paths (publish sends and forgets, the reader hands events on), results are not
kept, and the benchmark's own input is moved out of the garbage collector's sight
(gc.freeze), so neither is counted as validation cost.

Usage: python benchmarks/bench_validate.py [--events N] [--seed S]
Prints one JSON object: events, accepted, rejected, *_us_per_event (CPU), *_wall_us_per_event.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from consumers.codec import AvroCodec, DecodeError
from profile_engine.attributes import AttributeRegistry
from profile_engine.contract import ContractError, parse_event
from profile_engine.events import ProfileEvent
from profile_engine.synthetic import generate_events


def _timed(work: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _parse_all(raws: Sequence[dict[str, Any]], **kwargs: Any) -> int:
    accepted = 0
    for raw in raws:
        try:
            parse_event(raw, **kwargs)
        except ContractError:
            continue
        accepted += 1
    return accepted


def _accepted_events(raws: Sequence[dict[str, Any]]) -> list[ProfileEvent]:
    events = []
    for raw in raws:
        try:
            events.append(parse_event(raw))
        except ContractError:
            continue
    return events


def _decode_all(codec: AvroCodec, messages: Sequence[bytes]) -> int:
    decoded = 0
    for message in messages:
        try:
            codec.decode(message)
        except DecodeError:
            continue
        decoded += 1
    return decoded


def _clear_caches() -> None:
    """Forget cached identifier verdicts, so the next pass starts cold like a new process."""
    try:  # the rule book's caches
        from profile_engine.rules import clear_caches
    except ImportError:  # older versions cached in these places
        from consumers import codec
        from profile_engine import identifiers

        for name in ("normalise_email", "normalise_phone"):
            getattr(getattr(identifiers, name), "cache_clear", lambda: None)()
        getattr(codec, "_IDENTIFIER_CACHE", {}).clear()
        return
    clear_caches()


def _us(seconds: float, count: int) -> float:
    return round(seconds * 1e6 / max(1, count), 2)


def run(count: int, seed: int) -> dict[str, Any]:
    raws = [item for item in generate_events(count, seed) if isinstance(item, dict)]
    validator = AttributeRegistry(Path("standard-attributes-only.json")).validate_traits
    # Warm the process up on another stream (compiled patterns, allocator, first calls), so
    # the figures are per event, then start from cold identifier caches.
    warm_up = [item for item in generate_events(20_000, seed + 1) if isinstance(item, dict)]
    _parse_all(warm_up, trait_validator=validator)
    _clear_caches()
    gc.freeze()
    # The registry-checked pass first: it is what `publish` does, and it runs with cold caches.
    accepted, cpu, wall = _timed(lambda: _parse_all(raws, trait_validator=validator))
    figures: dict[str, Any] = {
        "events": len(raws),
        "accepted": accepted,
        "rejected": len(raws) - accepted,
        "parse_event_us_per_event": _us(cpu, len(raws)),
        "parse_event_wall_us_per_event": _us(wall, len(raws)),
    }
    # Without the registry (parse_event's default), cold, then warm as in a long publish.
    _clear_caches()
    _, cpu, wall = _timed(lambda: _parse_all(raws))
    figures["parse_event_no_registry_us_per_event"] = _us(cpu, len(raws))
    _, cpu, wall = _timed(lambda: _parse_all(raws))
    figures["parse_event_warm_no_registry_us_per_event"] = _us(cpu, len(raws))

    codec = AvroCodec()
    messages = [codec.encode(event) for event in _accepted_events(raws)]
    decoder = AvroCodec()
    _decode_all(decoder, [codec.encode(event) for event in _accepted_events(warm_up)])
    gc.freeze()
    _clear_caches()
    decoded, cpu, wall = _timed(lambda: _decode_all(decoder, messages))
    figures.update(
        decoded=decoded,
        avro_decode_us_per_event=_us(cpu, len(messages)),
        avro_decode_wall_us_per_event=_us(wall, len(messages)),
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    report = {**run(args.events, args.seed), "seed": args.seed, "cpus": os.cpu_count()}
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
