"""Deterministic interleaving of partitions.

Kafka orders messages only within a partition; how a client interleaves partitions depends on
fetch timing. To make a rebuild reproduce the same projections (profile ids included), the
consumer releases messages in (timestamp, partition, offset) order and only while every
partition that still holds unread messages has one buffered: the same log always yields the
same sequence, the way Kafka Streams synchronises its input partitions by timestamp.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator

from consumers.records import RawRecord


class PartitionMerger:
    """Buffers records per partition and yields them in a deterministic merged order."""

    def __init__(self, ends: dict[int, int], positions: dict[int, int]) -> None:
        # ends: offset one past the last message known to exist; positions: next unbuffered.
        self.ends = dict(ends)
        self.fetched_upto = dict(positions)
        self._buffers: dict[int, deque[RawRecord]] = {p: deque() for p in ends}
        self._heap: list[tuple[int, int, int]] = []

    def add(
        self, partition: int, records: Iterable[RawRecord], read_upto: int | None = None
    ) -> None:
        """Buffer the next records of one partition, in offset order.

        ``read_upto``: every offset below it has been read, records or not (transaction
        markers and aborted records are read but never buffered); default: the last record's.
        """
        buffer = self._buffers.setdefault(partition, deque())
        was_empty = not buffer
        buffer.extend(records)
        if read_upto is None and buffer:
            read_upto = buffer[-1][1] + 1
        if read_upto is not None and read_upto > self.fetched_upto.get(partition, 0):
            self.fetched_upto[partition] = read_upto
        if was_empty and buffer:
            head = buffer[0]
            heapq.heappush(self._heap, (head[2], partition, head[1]))

    def update_end(self, partition: int, end: int) -> None:
        if end > self.ends.get(partition, 0):
            self.ends[partition] = end

    def _may_have_more(self, partition: int) -> bool:
        return self.fetched_upto.get(partition, 0) < self.ends.get(partition, 0)

    def blocked_on(self) -> list[int]:
        """Partitions whose next message is needed before anything else can be released."""
        return [p for p, b in self._buffers.items() if not b and self._may_have_more(p)]

    def drain(self) -> Iterator[RawRecord]:
        """Release every record whose place in the merged order is already certain."""
        buffers, heap = self._buffers, self._heap
        if self.blocked_on():
            return
        while heap:
            _, partition, _ = heapq.heappop(heap)
            buffer = buffers[partition]
            record = buffer.popleft()
            yield record
            if buffer:
                head = buffer[0]
                heapq.heappush(heap, (head[2], partition, head[1]))
            elif self._may_have_more(partition):
                return

    def buffered(self) -> dict[int, int]:
        """Per partition, how many records wait in its buffer."""
        return {p: len(buffer) for p, buffer in self._buffers.items()}

    def released_upto(self) -> dict[int, int]:
        """Per partition, the offset below which every message was released or skipped."""
        return {
            p: buffer[0][1] if buffer else self.fetched_upto.get(p, 0)
            for p, buffer in self._buffers.items()
        }

    def caught_up(self) -> bool:
        return not self._heap and not any(self._may_have_more(p) for p in self._buffers)
