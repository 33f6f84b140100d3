"""The key store on a real key topic: records written as prebuilt batches, read back, erased."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from consumers.kafka_client import TopicMissingError
from consumers.key_store import KeyStore, key_topic_for
from consumers.topics import create_topics
from profile_engine.crypto import ERASED, KeyRing, key_ref

RING = KeyRing.from_master(bytes(range(32)))


@pytest.fixture
def key_topic(kafka_bootstrap: str, kafka_admin: Any) -> Iterator[str]:
    """The key topic of a fresh one-partition event topic, deleted with it afterwards."""
    topic = f"test-keys-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, topic, f"{topic}-dead", partitions=1, with_key_topic=True)
    try:
        yield key_topic_for(topic)
    finally:
        kafka_admin.delete_topics(
            [topic, f"{topic}-dead", key_topic_for(topic)], raise_errors=False
        )


def test_key_records_reach_the_topic_and_an_erasure_overwrites_the_keys_it_names(
    kafka_bootstrap: str, key_topic: str
) -> None:
    person, other = bytes([1]) * 16, bytes([2]) * 16
    refs = [key_ref(person, b"\x00\x00\x00\x01"), key_ref(person, b"\x00\x00\x00\x02")]
    refs.append(key_ref(other, b"\x00\x00\x00\x01"))
    wrapped = {ref: RING.wrap(ref, bytes(32), bytes(12)) for ref in refs}
    writer = KeyStore(kafka_bootstrap, key_topic).load()
    try:
        assert writer.publish(wrapped.items()) == 3
        # The first version only (the one the fold met): a later version of the same person
        # (made after an earlier erasure) stays.
        assert writer.erase_refs([refs[0]]) == 1
        assert writer.erase_refs([refs[0]]) == 0  # erased already: nothing written again
    finally:
        writer.close()
    reader = KeyStore(kafka_bootstrap, key_topic).load()
    try:
        assert [reader.lookup(ref) for ref in refs] == [ERASED, wrapped[refs[1]], wrapped[refs[2]]]
    finally:
        reader.close()


def test_an_attached_store_erases_without_reading_the_topic_first(
    kafka_bootstrap: str, key_topic: str
) -> None:
    # The folding side of consume and rebuild only erases: it attaches at start and names the
    # keys to overwrite, keys written by others since included.
    person = bytes([3]) * 16
    refs = [key_ref(person, b"\x00\x00\x00\x01"), key_ref(person, b"\x00\x00\x00\x02")]
    eraser = KeyStore(kafka_bootstrap, key_topic).attach()
    writer = KeyStore(kafka_bootstrap, key_topic).load()
    try:
        writer.publish((ref, RING.wrap(ref, bytes(32), bytes(12))) for ref in refs)
        assert len(eraser) == 0  # attached: nothing read
        assert eraser.erase_refs(refs) == 2
    finally:
        writer.close()
        eraser.close()
    reader = KeyStore(kafka_bootstrap, key_topic).load()
    try:
        assert [reader.lookup(ref) for ref in refs] == [ERASED, ERASED]
    finally:
        reader.close()


def test_attaching_to_a_missing_key_topic_fails_at_once(kafka_bootstrap: str) -> None:
    with pytest.raises(TopicMissingError, match="does not exist"):
        KeyStore(kafka_bootstrap, f"test-keys-missing-{uuid.uuid4().hex[:8]}").attach()
