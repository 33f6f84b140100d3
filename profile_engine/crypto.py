"""Crypto-shredding primitives: derived keys, blind indexes, data keys and sealed tokens.

Personal values travel and rest *sealed*: encrypted with AES-GCM under a data key (DEK) that
belongs to one identifier. Erasing a person destroys the data keys of their identifiers, so
every copy of the sealed values (topic, dead-letter topic, archives, backups, projections)
becomes unreadable at once. See README "Erasure that reaches the log".

- The **master key** (32 bytes, from the environment or a key file; never stored here) only
  derives other keys (HKDF-SHA256): the blind-index key, the fingerprint key and the
  key-wrapping key. Its ``check`` (a hash of a derived key) names it without revealing it.
- A **blind index** is a keyed 128-bit hash of an identifier's (type, normalised value): the
  fold links identifiers by it without reading them.
- A **key reference** names one data key: the blind index of its identifier (32 hex digits)
  and a version (8 hex digits), so producers that create a key for the same identifier at
  the same time never overwrite each other's.
- A **token** is one sealed value as text: ``pe1:<key ref>:<base64url(field, nonce, ct)>``.
  The authenticated data is the prefix, the key reference and the field code (what the value
  is: an identifier of a type and validity, a trait value of a JSON kind, track properties),
  so a token cannot be moved to another key or field unnoticed; whole events are bound by
  their keyed fingerprint (``KeyRing.fingerprint``), which the consumer checks after opening.
  Tokens sort by their key reference, i.e. by the identifier's blind index.

Pure functions over bytes: randomness comes from ``os.urandom`` (``NoncePool``); nothing here
reads the environment, a file or the clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from profile_engine.errors import BadInput, NeedsOperator
from profile_engine.events import ID_PRIORITY, ProfileEvent, event_fingerprint

MASTER_KEY_BYTES = 32
DEK_BYTES = 32
NONCE_BYTES = 12
BLIND_BYTES = 16
VERSION_BYTES = 4
REF_HEX = 2 * (BLIND_BYTES + VERSION_BYTES)  # 40 hex digits
TOKEN_PREFIX = "pe1:"
_PREFIX_BYTES = TOKEN_PREFIX.encode()
_TOKEN_HEAD = len(TOKEN_PREFIX) + REF_HEX + 1  # "pe1:" + ref + ":"

# Key-store values: a wrapped data key, or the erased marker (no key material, kept forever so
# that "erased" and "lost" can be told apart).
WRAPPED_VERSION = b"\x01"
ERASED = b"\x00"
WRAPPED_BYTES = 1 + NONCE_BYTES + DEK_BYTES + 16

# Field codes (authenticated with each token).
IDENTIFIER_FIELD = 0x10  # + the type's priority index, + INVALID_FLAG when it failed its check
INVALID_FLAG = 0x08
TRAIT_FIELD = 0x20  # + the JSON kind's index in TRAIT_KINDS
PROPERTIES_FIELD = 0x30
TRAIT_KINDS = ("string", "long", "double", "boolean")
_TRAIT_KIND_OF = {str: 0, int: 1, float: 2, bool: 3}


class SealError(BadInput):
    """A sealed value that cannot be opened as what it claims to be (damaged or moved)."""


class DamagedKey(BadInput):
    """A key record whose value is no wrapped key at all (wrong length or version): the
    events that need it are dead letters; the others fold on. (One that has the shape but
    does not unwrap is KeyMaterialError: most likely another master key, for the operator.)"""


class KeyMaterialError(NeedsOperator):
    """Key material that does not fit: a master key that is not 32 bytes, or a data key that
    does not unwrap under this master key."""


# -- the master key and what it derives -----------------------------------------------------


def master_key_from_text(text: str, source: str) -> bytes:
    """The 32-byte master key from its base64 text; the error names ``source``, never the key."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyMaterialError(f"{source}: not base64 text") from None
    if len(key) != MASTER_KEY_BYTES:
        raise KeyMaterialError(
            f"{source}: the master key must be {MASTER_KEY_BYTES} bytes, base64-encoded "
            f"(e.g. `openssl rand -base64 32`), not {len(key)} bytes"
        )
    return key


def _derive(master: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(master)


@dataclass(frozen=True)
class KeyRing:
    """The keys derived from one master key (picklable: it crosses to worker processes)."""

    blind_key: bytes = field(repr=False)
    fingerprint_key: bytes = field(repr=False)
    wrapping_key: bytes = field(repr=False)
    check: str  # names the master key (e.g. in projection meta); reveals nothing of it

    @classmethod
    def from_master(cls, master: bytes) -> KeyRing:
        if len(master) != MASTER_KEY_BYTES:
            raise KeyMaterialError(f"the master key must be {MASTER_KEY_BYTES} bytes")
        check = hashlib.sha256(_derive(master, b"profile-engine check v1")).hexdigest()[:16]
        return cls(
            _derive(master, b"profile-engine blind index v1"),
            _derive(master, b"profile-engine fingerprint v1"),
            _derive(master, b"profile-engine key wrapping v1"),
            check,
        )

    def blind_index(self, id_type: str, value: str) -> bytes:
        """The keyed 128-bit hash of a normalised identifier."""
        data = f"{id_type}\x00{value}".encode()
        return hashlib.blake2b(data, digest_size=BLIND_BYTES, key=self.blind_key).digest()

    def content_id(self, data: bytes) -> str:
        """A keyed 128-bit hash of ``data`` as UUID text, for ids derived from content (a
        published line without an event_id, an imported file): stable under one master key,
        and not a dictionary-attackable hash of the personal values in it."""
        digest = hashlib.blake2b(
            data, digest_size=16, key=self.fingerprint_key, person=b"pe content id"
        ).digest()
        return uuid_text(digest)

    def identifier_key(self, id_type: str, value: str) -> str:
        """The blind index as UUID text: the projections' ``id_key`` in a keyed projection."""
        return uuid_text(self.blind_index(id_type, value))

    def content_fingerprint(self, event: ProfileEvent) -> str:
        """The keyed fingerprint as UUID text (``keys.IdentifierHashes``)."""
        return uuid_text(self.fingerprint(event))

    def fingerprint(self, event: ProfileEvent) -> bytes:
        """The event's content fingerprint, keyed: equal for a redelivery, unforgeable without
        the master key, and not a dictionary-attackable hash of personal values."""
        return event_fingerprint(event, self.fingerprint_key)

    def wrap(self, ref: str, dek: bytes, nonce: bytes) -> bytes:
        """The data key ``dek`` of ``ref`` encrypted under the key-wrapping key."""
        sealed = _wrapper(self.wrapping_key).encrypt(nonce, dek, _wrap_aad(ref))
        return WRAPPED_VERSION + nonce + sealed

    def unwrap(self, ref: str, wrapped: bytes) -> bytes:
        if len(wrapped) != WRAPPED_BYTES or wrapped[:1] != WRAPPED_VERSION:
            raise DamagedKey(
                f"the data key {ref} in the key store is damaged (not a wrapped key of this "
                f"version: {len(wrapped)} bytes)"
            )
        nonce, sealed = wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :]
        try:
            return _wrapper(self.wrapping_key).decrypt(nonce, sealed, _wrap_aad(ref))
        except InvalidTag:
            raise KeyMaterialError(
                f"the data key {ref} does not unwrap: it was wrapped under another master key"
            ) from None


# The cipher of each key-wrapping key (a KeyRing stays picklable; building one per data key
# cost more than the wrapping).
_WRAPPERS: dict[bytes, AESGCM] = {}


def _wrapper(wrapping_key: bytes) -> AESGCM:
    cipher = _WRAPPERS.get(wrapping_key)
    if cipher is None:
        if len(_WRAPPERS) >= 16:
            _WRAPPERS.clear()
        cipher = _WRAPPERS[wrapping_key] = AESGCM(wrapping_key)
    return cipher


def _wrap_aad(ref: str) -> bytes:
    return b"pe-dek:" + ref.encode()


def uuid_text(digest: bytes) -> str:
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# -- key references ---------------------------------------------------------------------------


def key_ref(blind: bytes, version: bytes) -> str:
    return blind.hex() + version.hex()


def ref_blind(ref: str) -> str:
    """The blind index of a key reference, as UUID text (the projections' id_key)."""
    return uuid_text(bytes.fromhex(ref[: 2 * BLIND_BYTES]))


def is_key_ref(text: str) -> bool:
    if len(text) != REF_HEX:
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return text == text.lower()


def run_data_key(run_secret: bytes, blind: bytes) -> bytes:
    """The data key a publishing run gives a new identifier: every worker of the run derives
    the same one without coordinating. ``run_secret`` lives in memory for the run only."""
    return hashlib.blake2b(blind, digest_size=DEK_BYTES, key=run_secret).digest()


# -- tokens -------------------------------------------------------------------------------------


class NoncePool:
    """Random 96-bit nonces, drawn from the OS a few thousand at a time (one call each would
    cost as much as the encryption)."""

    def __init__(self, batch: int = 4096) -> None:
        self._batch = batch
        self._buffer = b""
        self._position = 0

    def take(self) -> bytes:
        position = self._position
        if position + NONCE_BYTES > len(self._buffer):
            self._buffer = os.urandom(NONCE_BYTES * self._batch)
            position = 0
        self._position = position + NONCE_BYTES
        return self._buffer[position : position + NONCE_BYTES]


def identifier_field(id_type: str, valid: bool) -> int:
    return IDENTIFIER_FIELD + ID_PRIORITY.index(id_type) + (0 if valid else INVALID_FLAG)


def identifier_of_field(code: int) -> tuple[str, bool] | None:
    """(id_type, valid) of an identifier field code, or None for another field."""
    if code & 0xF0 != IDENTIFIER_FIELD:
        return None
    index = code & 0x07
    if index >= len(ID_PRIORITY):
        return None
    return ID_PRIORITY[index], not code & INVALID_FLAG


def trait_field(value: Any) -> int:
    return TRAIT_FIELD + _TRAIT_KIND_OF[type(value)]


def trait_kind(code: int) -> str | None:
    """The JSON kind (string|long|double|boolean) of a trait field code, else None."""
    if code & 0xF0 != TRAIT_FIELD or code & 0x0F >= len(TRAIT_KINDS):
        return None
    return TRAIT_KINDS[code & 0x0F]


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def seal(aead: AESGCM, ref: str, code: int, plaintext: bytes, nonce: bytes) -> str:
    """One sealed value as a token."""
    head = bytes((code,))
    body = aead.encrypt(nonce, plaintext, _PREFIX_BYTES + ref.encode() + head)
    text = binascii.b2a_base64(head + nonce + body, newline=False).translate(_TO_URLSAFE)
    return f"{TOKEN_PREFIX}{ref}:{text.rstrip(b'=').decode()}"


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


# A person's tokens recur event after event (a publisher seals each identifier once): parsed
# once, kept in a bounded cache (cleared when full), like identifier keys (profile_engine.keys).
_PARSED: dict[str, tuple[str, int, bytes]] = {}
_PARSED_MAX = 200_000


def parse_token(token: str) -> tuple[str, int, bytes]:
    """(key reference, field code, decoded body) of a token; SealError when it is not one.
    The field code is readable without the key (and authenticated when the token is opened)."""
    parsed = _PARSED.get(token)
    return parsed if parsed is not None else _parse(token)


def parse_unique_token(token: str) -> tuple[str, int, bytes]:
    """``parse_token`` for a token met once (track properties are sealed per event): not kept,
    so it never pushes the recurring tokens out of the cache."""
    return _parse(token, keep=False)


def _parse(token: str, keep: bool = True) -> tuple[str, int, bytes]:
    if not token.startswith(TOKEN_PREFIX) or len(token) <= _TOKEN_HEAD:
        raise SealError("not a sealed value")
    ref = token[len(TOKEN_PREFIX) : _TOKEN_HEAD - 1]
    if token[_TOKEN_HEAD - 1] != ":" or not is_key_ref(ref):
        raise SealError("a sealed value without a valid key reference")
    text = token[_TOKEN_HEAD:]
    try:
        # base64.urlsafe_b64decode, without its per-call conversions (non-alphabet
        # characters are discarded the same way; they fail authentication when opened).
        data = text.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4)
        body = binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        raise SealError("a sealed value that is not base64url") from None
    if len(body) < 1 + NONCE_BYTES + 16:
        raise SealError("a sealed value too short to hold a nonce and a tag")
    parsed = (ref, body[0], body)
    if keep:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[token] = parsed
    return parsed


def token_ref(token: str) -> str:
    """The key reference a token names; SealError when it is not a token."""
    return parse_token(token)[0]


def token_field(token: str) -> int:
    """The field code of a token (readable without its key; authenticated when opened)."""
    return parse_token(token)[1]


def open_token(aead: AESGCM, token: str) -> tuple[int, bytes]:
    """(field code, plaintext) of a token sealed under ``aead``'s key; SealError when it fails
    authentication (tampered with, or sealed under another key)."""
    ref, code, body = parse_token(token)
    return code, open_body(aead, ref, body)


def open_body(aead: AESGCM, ref: str, body: bytes) -> bytes:
    """The plaintext of a parsed token (``parse_token``); SealError when it fails
    authentication."""
    nonce, sealed = body[1 : 1 + NONCE_BYTES], body[1 + NONCE_BYTES :]
    try:
        return aead.decrypt(nonce, sealed, _PREFIX_BYTES + ref.encode() + body[:1])
    except InvalidTag:
        raise SealError(f"a sealed value under key {ref} fails authentication") from None


def trait_plaintext(value: Any) -> bytes:
    return orjson.dumps(value)


def trait_value(plaintext: bytes) -> Any:
    return orjson.loads(plaintext)


class AeadCache:
    """AES-GCM objects per key reference (building one costs more than an encryption)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._by_ref: dict[str, AESGCM] = {}
        self._max_entries = max_entries

    def get(self, ref: str) -> AESGCM | None:
        return self._by_ref.get(ref)

    def put(self, ref: str, dek: bytes) -> AESGCM:
        if len(self._by_ref) >= self._max_entries:
            self._by_ref.clear()
        aead = self._by_ref[ref] = AESGCM(dek)
        return aead

    def drop(self, ref: str) -> None:
        self._by_ref.pop(ref, None)
