"""The key store: data keys on a compacted Kafka topic, ``<topic>-keys``, held in memory.

One record per data key: the Kafka key is the key reference (40 hex digits: the identifier's
blind index and a version), the value the data key wrapped under the master key's
key-wrapping key, or, once the person was erased, the *erased marker* (one byte, no key
material). The marker overwrites the wrapped key; compaction then removes the old record
within the bound the topic is created with (see ``KEY_TOPIC_CONFIG`` and the README). The
marker itself stays forever, so a consumer tells "erased" (fold by blind index, values
unreadable) from "lost" (dead-letter: ``no key for … (key store lost?)``).

Why a topic: it lives and is backed up with the log it unlocks, every producer, consumer and
rebuild reaches it with the client they already have, and compaction is exactly "the latest
value per key". Every process that seals or opens events reads the whole topic into memory at
start (``KeyStore.load``) and catches up when it meets a key it does not know.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition

from consumers.batch_producer import BatchProducer
from consumers.kafka_client import TopicMissingError, kafka_errors
from consumers.record_batches import Batcher, KeyPartitioner, RecordTooLarge
from profile_engine.crypto import BLIND_BYTES, ERASED, MASTER_KEY_BYTES, KeyRing, is_key_ref
from profile_engine.errors import NeedsOperator
from profile_engine.sealing import SealingPlan

KEY_TOPIC_SUFFIX = "-keys"
# A key store is small and written rarely; one partition keeps its order simple.
KEY_TOPIC_PARTITIONS = 1
# Compaction settings that bound how long an overwritten (erased) key survives in the log: a
# record becomes eligible once its segment is closed (segment.ms) and is compacted at the
# latest max.compaction.lag.ms after it was written, whatever the dirty ratio. Erased markers
# are values, not tombstones, so delete.retention.ms never removes them.
KEY_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "3600000",  # 1 hour
    "max.compaction.lag.ms": "3600000",  # 1 hour
    "min.compaction.lag.ms": "0",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "86400000",
}
POLL_MS = 500
ATTEMPT_TIMEOUT_MS = 10_000


def key_topic_for(topic: str) -> str:
    return f"{topic}{KEY_TOPIC_SUFFIX}"


class KeyStoreError(NeedsOperator):
    """The key store cannot be read or written as needed."""


@dataclass(frozen=True)
class SealingConfig:
    """What a process needs to seal or open events: the master key and where the keys are.
    Crosses to reader and worker processes (in a pipe, never on disk)."""

    master: bytes = field(repr=False)
    bootstrap_servers: str
    key_topic: str

    def __post_init__(self) -> None:
        if len(self.master) != MASTER_KEY_BYTES:
            raise KeyStoreError("the master key must be 32 bytes")

    @property
    def ring(self) -> KeyRing:
        return KeyRing.from_master(self.master)


class KeyStore:
    """The key topic in memory: key reference -> wrapped key or the erased marker.

    About 200 bytes of memory a key (a dict entry of two bytes objects); ``load`` reads the
    whole topic (the figures are in the README).
    """

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self._keys: dict[str, bytes] = {}
        self._consumer: KafkaConsumer | None = None
        self._producer: BatchProducer | None = None
        self._partitions: list[TopicPartition] = []
        self._last_refresh = float("-inf")
        self._chunk_started = 0.0

    # -- reading -------------------------------------------------------------------------------

    def load(self) -> KeyStore:
        """Read the whole topic (from its earliest offsets to its end)."""
        self.attach()
        self.refresh()
        return self

    def attach(self) -> KeyStore:
        """Open the topic at its earliest offsets without reading it yet: TopicMissingError now
        when it does not exist; ``refresh`` reads it. What only erases keys (the folding side of
        consume and rebuild) never reads it: it names the keys it overwrites (``erase_refs``),
        so a run never pays for reading the whole store."""
        with kafka_errors(self.bootstrap_servers):
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                client_id="profile-engine-keys",
                isolation_level="read_committed",
                request_timeout_ms=30_000,
            )
            numbers = consumer.partitions_for_topic(self.topic)
            if not numbers:
                consumer.close()
                raise TopicMissingError(
                    f"key topic {self.topic!r} does not exist; create it with "
                    "`profile-engine topics create` (sealed events need it)"
                )
            self._partitions = [TopicPartition(self.topic, p) for p in sorted(numbers)]
            consumer.assign(self._partitions)
            consumer.seek_to_beginning(*self._partitions)
            self._consumer = consumer
        return self

    def refresh(self) -> None:
        """Read what was written since the last read, up to the end offsets as of now."""
        consumer = self._consumer
        if consumer is None:
            raise KeyStoreError("the key store was not loaded")
        self._last_refresh = time.monotonic()
        with kafka_errors(self.bootstrap_servers):
            ends = consumer.end_offsets(self._partitions, timeout_ms=ATTEMPT_TIMEOUT_MS)
            waiting = {tp for tp, end in ends.items() if consumer.position(tp) < end}
            # A large store takes a while to read: only a read that stops moving fails.
            deadline = time.monotonic() + ATTEMPT_TIMEOUT_MS / 1000
            while waiting:
                for _tp, records in consumer.poll(timeout_ms=POLL_MS).items():
                    for record in records:
                        self._put(record.key, record.value)
                    deadline = time.monotonic() + ATTEMPT_TIMEOUT_MS / 1000
                waiting = {tp for tp in waiting if consumer.position(tp) < ends[tp]}
                if waiting and time.monotonic() > deadline:
                    raise KeyStoreError(
                        f"key topic {self.topic!r} could not be read to its end: nothing came "
                        f"for {ATTEMPT_TIMEOUT_MS // 1000} s"
                    )

    def _put(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return  # not a key record (a tombstone someone wrote): nothing to hold
        ref = key.decode("ascii", "replace")
        if not is_key_ref(ref):
            return
        self._keys[ref] = value

    def begin_chunk(self) -> None:
        """Records about to be opened were all fetched before now: a key they miss after a
        refresh that started later is missing for good (see ``lookup``)."""
        self._chunk_started = time.monotonic()

    def lookup(self, ref: str) -> bytes | None:
        """The wrapped key of ``ref``, the erased marker, or None when the store holds
        neither. A producer writes a key (acknowledged) before the events sealed under it,
        so a miss reads on once, unless a read already started after the event was fetched
        (at most one read per chunk of records however many keys are missing)."""
        found = self._keys.get(ref)
        if (
            found is None
            and self._consumer is not None
            and (self._last_refresh < self._chunk_started)
        ):
            self.refresh()
            found = self._keys.get(ref)
        return found

    def live_keys(self) -> dict[bytes, tuple[bytes, bytes]]:
        """blind index -> (version, wrapped key) of one live key per identifier (the greatest
        version), for producers to reuse."""
        live: dict[bytes, tuple[bytes, bytes]] = {}
        for ref, value in self._keys.items():
            if value == ERASED:
                continue
            blind, version = bytes.fromhex(ref[: 2 * BLIND_BYTES]), bytes.fromhex(ref[32:])
            kept = live.get(blind)
            if kept is None or version > kept[0]:
                live[blind] = (version, value)
        return live

    def __len__(self) -> int:
        return len(self._keys)

    # -- writing -------------------------------------------------------------------------------

    def publish(self, records: Iterable[tuple[str, bytes]]) -> int:
        """Write key records and wait until the broker acknowledged every one (acks=all).

        The records go out as prebuilt record batches (consumers.record_batches), as events do:
        a publishing run writes one key per new identifier, and a kafka-python ``send`` per
        record costs about as much as sealing the events that need them."""
        pending = list(records)
        if not pending:
            return 0
        with kafka_errors(self.bootstrap_servers):
            if self._producer is None:
                self._producer = BatchProducer(
                    self.bootstrap_servers, self.topic, client_id="profile-engine-keys"
                )
            producer = self._producer
            delivery = producer.delivery
            confirmed, refused = delivery.confirmed, len(delivery.unconfirmed)
            batcher = Batcher(KeyPartitioner(producer.partitions), producer.max_batch_bytes)
            now_ms = int(time.time() * 1000)
            try:
                for line, (ref, value) in enumerate(pending):
                    batcher.add(ref.encode(), value, now_ms, line)
            except RecordTooLarge as error:
                raise KeyStoreError(f"a key record of {error.size} bytes is too large") from None
            for built in batcher.take():
                if not producer.send(built):
                    break
            producer.finish()
        if delivery.gave_up is not None or len(delivery.unconfirmed) > refused:
            reasons = ", ".join(delivery.reasons) or delivery.gave_up
            self._drop_producer()
            raise KeyStoreError(f"the key topic {self.topic!r} refused a key record: {reasons}")
        if delivery.confirmed - confirmed != len(pending):
            self._drop_producer()
            raise KeyStoreError(f"the key topic {self.topic!r} did not confirm every key record")
        for ref, value in pending:
            self._put(ref.encode(), value)
        return len(pending)

    def _drop_producer(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None

    def erase_refs(self, refs: Iterable[str]) -> int:
        """Destroy these data keys: an erased marker over each one not erased yet,
        acknowledged before this returns; how many were written."""
        live = sorted({ref for ref in refs if self._keys.get(ref) != ERASED})
        return self.publish((ref, ERASED) for ref in live) if live else 0

    def erased(self, ref: str) -> bool:
        return self._keys.get(ref) == ERASED

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._drop_producer()


class MemoryKeyStore(KeyStore):
    """A key store without Kafka (tests of the fold's rules; never for real data)."""

    def __init__(self) -> None:
        super().__init__("", "memory")

    def load(self) -> KeyStore:
        return self

    def refresh(self) -> None:
        self._last_refresh = time.monotonic()

    def publish(self, records: Iterable[tuple[str, bytes]]) -> int:
        pending = list(records)
        for ref, value in pending:
            self._put(ref.encode(), value)
        return len(pending)


KeySink = Callable[[list[tuple[str, bytes]]], object]


@contextmanager
def producer_sealing(
    sealing: SealingConfig | None,
) -> Iterator[tuple[SealingPlan | None, KeySink | None]]:
    """For publish and import: the run's sealing plan (the key store read once, its live keys
    reused) and the sink that writes new keys; (None, None) without a master key."""
    if sealing is None:
        yield None, None
        return
    store = KeyStore(sealing.bootstrap_servers, sealing.key_topic).load()
    try:
        yield SealingPlan.new(sealing.master, store.live_keys()), store.publish
    finally:
        store.close()
