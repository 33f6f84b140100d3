"""From a message, an archived record or an event to the fold's ``Prepared`` tuple.

Without a master key this is what it always was: decode, validate, ``prepare``. With one
(``SealingConfig``), the projection is *keyed*: identifier keys are blind indexes and
fingerprints are keyed, whether an event arrives sealed or in clear, so the two resolve to
the same identifiers; sealed events are opened with the data keys of the key store
(profile_engine.sealing) and their tokens go to the projection as they came.
"""

from __future__ import annotations

from typing import Any

from consumers.codec import AvroCodec, DecodeError, from_opened_record, from_record
from consumers.key_store import KeyStore, SealingConfig
from profile_engine.batch_fold import Prepared, prepare
from profile_engine.crypto import KeyRing
from profile_engine.errors import BadInput
from profile_engine.events import ProfileEvent
from profile_engine.rules import FILES_WINDOW, EventTimeWindow
from profile_engine.sealing import Opener, open_sealed, seal_of


class EventPreparer:
    """Prepares events for one process (a reader, a file parser); holds its key store."""

    def __init__(
        self,
        sealing: SealingConfig | None,
        codec: AvroCodec | None = None,
        key_store: KeyStore | None = None,
    ) -> None:
        self.codec = codec or AvroCodec()
        self.ring: KeyRing | None = None
        self.keys: KeyStore | None = None
        self._opener: Opener | None = None
        if sealing is not None:
            self.ring = sealing.ring
            self.keys = key_store or KeyStore(sealing.bootstrap_servers, sealing.key_topic)
            if key_store is None:
                self.keys.load()
            self._opener = Opener(self.ring, self.keys.lookup)

    def begin_chunk(self) -> None:
        """Called before each chunk of records (see KeyStore.begin_chunk)."""
        if self.keys is not None:
            self.keys.begin_chunk()

    def message(self, value: bytes, window: EventTimeWindow = FILES_WINDOW) -> Prepared:
        """A Kafka message; DecodeError for anything that cannot be folded."""
        if self._opener is None:
            return prepare(self.codec.decode(value, window))
        return self.record(self.codec.record(value), window)

    def record(self, record: dict[str, Any], window: EventTimeWindow = FILES_WINDOW) -> Prepared:
        """An envelope record (from a message or an archive); DecodeError if unusable."""
        try:
            if seal_of(record) is None:
                return prepare(from_record(record, window), self.ring)
            if self._opener is None:
                return prepare(from_record(record, window))  # raises: no key to open it
            return open_sealed(
                record,
                self._opener,
                lambda sealed, identifiers, fields: from_opened_record(
                    sealed, window, identifiers, fields
                ),
            )
        except DecodeError:
            raise
        except BadInput as error:
            raise DecodeError(str(error)) from None
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise DecodeError(f"record: {type(error).__name__}: {error}") from None

    def event(self, event: ProfileEvent) -> Prepared:
        """An event read in clear (a JSON line, a list in tests)."""
        return prepare(event, self.ring)

    def close(self) -> None:
        if self.keys is not None:
            self.keys.close()
