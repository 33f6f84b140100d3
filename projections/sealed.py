"""Sealed values in a projection: which key a projection was built with, the data keys it
keeps, and reading sealed values back (README "Erasure that reaches the log").

In a *keyed* projection (folded with a master key) every personal column of a sealed event
holds its token as it came from the log (``identifiers.id_value``, ``traits.value``,
``subscriptions.identifier``, ``identity_conflicts.dropped_id_value``, the tokens inside
``events.payload``, the raw messages in ``dead_letters``), and ``data_keys`` holds the wrapped
data keys those tokens need, so reads decrypt without Kafka. An erasure deletes the data keys
of the erased identifiers: what is left of them in the file is ciphertext nobody can open.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from profile_engine.crypto import (
    PROPERTIES_FIELD,
    AeadCache,
    KeyRing,
    SealError,
    identifier_of_field,
    is_token,
    open_token,
    token_ref,
    trait_kind,
)
from profile_engine.errors import BadInput
from projections.connection import registered
from projections.store import ProjectionConfigError, ProjectionStore

KEYING_META = "identifier_keys"
PLAIN = "plain"


def keying_of(ring: KeyRing | None) -> str:
    return PLAIN if ring is None else f"keyed:{ring.check}"


def check_keying(store: ProjectionStore, ring: KeyRing | None) -> None:
    """A projection's identifier keys are plain hashes or blind indexes under one master key,
    for good: record which on first use, refuse to fold it the other way later."""
    store.ring = ring
    wanted = keying_of(ring)
    stored = store.get_meta(KEYING_META)
    if stored is None:
        applied = store.con.execute("SELECT count(*) FROM applied_events").fetchone()
        # A projection folded before keys existed holds plain keys.
        stored = PLAIN if applied and applied[0] else wanted
        store.set_meta(KEYING_META, stored)
    if stored == wanted:
        return
    where = store.db_path
    if stored == PLAIN:
        raise ProjectionConfigError(
            f"{where} was folded without a master key; with one, identifiers are keyed "
            f"differently: rebuild it (`profile-engine rebuild`) with the master key set"
        )
    if ring is None:
        raise ProjectionConfigError(
            f"{where} was folded with a master key (check {stored.removeprefix('keyed:')}); "
            "set PROFILE_ENGINE_MASTER_KEY or PROFILE_ENGINE_KEY_FILE to it"
        )
    raise ProjectionConfigError(
        f"{where} was folded with another master key (check {stored.removeprefix('keyed:')}, "
        f"this one {ring.check}); use that key, or rebuild with this one"
    )


def stored_keying(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute("SELECT value FROM projection_meta WHERE key = ?", [KEYING_META]).fetchall()
    return str(row[0][0]) if row else PLAIN


class SealedReadError(BadInput):
    """A keyed projection read without its master key (or with another one)."""


def reading_keys(con: duckdb.DuckDBPyConnection, ring: KeyRing | None) -> KeyRing | None:
    """The key ring a read of this projection needs: None for a plain projection; for a keyed
    one the ring of its master key (a read without it, or with another, is refused: neither
    an identifier lookup nor a sealed value would work)."""
    stored = stored_keying(con)
    if stored == PLAIN:
        return None
    if ring is None:
        raise SealedReadError(
            "this projection holds sealed values (folded with a master key): set "
            "PROFILE_ENGINE_MASTER_KEY or PROFILE_ENGINE_KEY_FILE to read it"
        )
    if stored != keying_of(ring):
        raise SealedReadError(
            f"this projection was folded with another master key "
            f"(check {stored.removeprefix('keyed:')}, this one {ring.check})"
        )
    return ring


def identifier_keys_of(store: ProjectionStore, profile_ids: Iterable[str]) -> set[str]:
    """id_key of every stored identifier of these profiles (their erasure's key set)."""
    return _column_where_in(store, "id_key::VARCHAR", "identifiers", "profile_id", profile_ids)


def stored_refs_of(store: ProjectionStore, blinds: Iterable[str]) -> set[str]:
    """The data keys (references) the projection stores for these identifiers."""
    return _column_where_in(store, "key_ref", "data_keys", "blind", blinds)


def _column_where_in(
    store: ProjectionStore, column: str, table: str, key: str, values: Iterable[str]
) -> set[str]:
    """``column`` of the rows of ``table`` whose UUID ``key`` is one of ``values``."""
    wanted = pa.table({"value": pa.array(sorted(set(values)), pa.string())})
    if not wanted.num_rows:
        return set()
    with registered(store.con, _w_wanted=wanted):
        rows = store.con.execute(
            f"SELECT {column} FROM {table} WHERE {key} IN (SELECT value::UUID FROM _w_wanted)"
        ).fetchall()
    return {str(found) for (found,) in rows}


# -- reading sealed values back ----------------------------------------------------------------


class Revealer:
    """Opens the tokens a read finds, with the projection's own data keys.

    A value whose key the projection no longer holds (erased) reads as None. Nothing is
    cached beyond one revealer, so a server's reads never outlive an erasure.
    """

    def __init__(
        self, con: duckdb.DuckDBPyConnection, ring: KeyRing | None, extra_keys: str | None = None
    ) -> None:
        """``extra_keys``: a table of (key_ref, wrapped) read beside ``data_keys`` (a batch's
        data keys, before they are written)."""
        self.con = con
        self.ring = ring
        self._extra_keys = extra_keys
        self._ciphers = AeadCache()

    def reveal(self, tokens: Iterable[str]) -> dict[str, Any]:
        """token -> its value (identifier text, trait JSON value, properties object) or None
        when it cannot be opened (erased, or no master key)."""
        wanted = {t for t in tokens if is_token(t)}
        if not wanted:
            return {}
        revealed: dict[str, Any] = dict.fromkeys(wanted)
        if self.ring is None:
            return revealed
        keys = self._wrapped({token_ref(t) for t in wanted})
        for token in wanted:
            ref = token_ref(token)
            wrapped = keys.get(ref)
            if wrapped is None:
                continue
            cipher = self._ciphers.get(ref) or self._ciphers.put(
                ref, self.ring.unwrap(ref, wrapped)
            )
            try:
                code, plaintext = open_token(cipher, token)
            except SealError:
                continue
            revealed[token] = decode_plaintext(code, plaintext)
        return revealed

    def _wrapped(self, refs: set[str]) -> dict[str, bytes]:
        tables = ["data_keys"] if self._extra_keys is None else ["data_keys", self._extra_keys]
        query = " UNION ALL ".join(
            f"SELECT key_ref, wrapped FROM {table} WHERE key_ref IN (SELECT unnest(?))"
            for table in tables
        )
        # Positional: the fold's process reaches the server's connection through a pipe
        # (projections.remote_connection) that passes parameters as a list.
        rows = self.con.execute(query, [sorted(refs)] * len(tables)).fetchall()
        return {str(ref): bytes(wrapped) for ref, wrapped in rows}

    def document(self, value: Any) -> Any:
        """``value`` (a JSON-like document) with every token replaced by what it holds."""
        found: list[str] = []
        _collect(value, found)
        if not found:
            return value
        return _replace(value, self.reveal(found))


def reveal_document(con: duckdb.DuckDBPyConnection, document: Any, ring: KeyRing | None) -> Any:
    """``document`` with its tokens opened; without tokens (a plain projection) it costs
    nothing, with tokens it needs the projection's master key (SealedReadError otherwise)."""
    found: list[str] = []
    _collect(document, found)
    if not found:
        return document
    keyed = reading_keys(con, ring)
    if keyed is None:
        return document
    return _replace(document, Revealer(con, keyed).reveal(found))


def decode_plaintext(code: int, plaintext: bytes) -> Any:
    if identifier_of_field(code) is not None:
        return plaintext.decode()
    if trait_kind(code) is not None or code == PROPERTIES_FIELD:
        return orjson.loads(plaintext)
    return plaintext.decode()


def _collect(value: Any, found: list[str]) -> None:
    if isinstance(value, str):
        if is_token(value):
            found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, found)


def _replace(value: Any, revealed: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return revealed.get(value, value) if is_token(value) else value
    if isinstance(value, dict):
        return {k: _replace(v, revealed) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace(v, revealed) for v in value]
    return value


# -- SQL: functions and plaintext views for people who query the file ---------------------------

# Temporary views (they live in the connection, never in the file, so other DuckDB clients
# never meet a function they do not have): the personal columns in clear, NULL when erased.
_REF = "split_part({column}, ':', 2)"
_KEY_OF = "LEFT JOIN data_keys AS k ON k.key_ref = " + _REF
PLAINTEXT_VIEWS = {
    "identifiers_plain": (
        "SELECT i.* REPLACE (coalesce(pe_open(i.id_value, k.wrapped),"
        " CASE WHEN NOT starts_with(i.id_value, 'pe1:') THEN i.id_value END) AS id_value)"
        f" FROM identifiers AS i {_KEY_OF.format(column='i.id_value')}"
    ),
    "traits_plain": (
        "SELECT t.* REPLACE (coalesce(pe_open(t.value, k.wrapped),"
        " CASE WHEN NOT starts_with(t.value, 'pe1:') THEN t.value END) AS value)"
        f" FROM traits AS t {_KEY_OF.format(column='t.value')}"
    ),
    "subscriptions_plain": (
        "SELECT s.* REPLACE (coalesce(pe_open(s.identifier, k.wrapped),"
        " CASE WHEN NOT starts_with(s.identifier, 'pe1:') THEN s.identifier END) AS identifier)"
        f" FROM subscriptions AS s {_KEY_OF.format(column='s.identifier')}"
    ),
    "identity_conflicts_plain": (
        "SELECT c.* REPLACE (coalesce(pe_open(c.dropped_id_value, k.wrapped),"
        " CASE WHEN NOT starts_with(c.dropped_id_value, 'pe1:') THEN c.dropped_id_value END)"
        " AS dropped_id_value) FROM identity_conflicts AS c"
        f" {_KEY_OF.format(column='c.dropped_id_value')}"
    ),
    # Each event's payload with the keys of the tokens inside it (a whole-table pass).
    "events_plain": (
        "WITH refs AS (SELECT DISTINCT r, key_ref FROM (SELECT e.rowid AS r,"
        " unnest(regexp_extract_all(e.payload::VARCHAR, 'pe1:([0-9a-f]{40}):', 1)) AS key_ref"
        " FROM events AS e)),"
        " keys AS (SELECT r, map(list(key_ref), list(wrapped)) AS m"
        " FROM refs JOIN data_keys USING (key_ref) GROUP BY r)"
        " SELECT e.* REPLACE (pe_reveal(e.payload::VARCHAR, k.m)::JSON AS payload)"
        " FROM events AS e LEFT JOIN keys AS k ON k.r = e.rowid"
    ),
}


def register_sql(con: duckdb.DuckDBPyConnection, ring: KeyRing) -> None:
    """``pe_open(token, wrapped_key)``, ``pe_reveal(json, keys)`` and the ``*_plain`` views,
    on this connection only. Call before the connection is sandboxed."""
    register_functions(con, ring)
    create_plaintext_views(con)


def create_plaintext_views(con: duckdb.DuckDBPyConnection) -> None:
    """The ``*_plain`` views, temporary: they live in this connection (a server makes them on
    each SQL reader's cursor; the functions they call are the instance's)."""
    for name, select in PLAINTEXT_VIEWS.items():
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")


def register_functions(con: duckdb.DuckDBPyConnection, ring: KeyRing) -> None:
    """``pe_open`` and ``pe_reveal`` under ``ring``; every cursor of the instance sees them."""
    ciphers = AeadCache()

    def cipher_for(ref: str, wrapped: bytes) -> Any:
        return ciphers.get(ref) or ciphers.put(ref, ring.unwrap(ref, wrapped))

    def pe_open(token: str | None, wrapped: bytes | None) -> str | None:
        if token is None or wrapped is None or not is_token(token):
            return None
        try:
            code, plaintext = open_token(cipher_for(token_ref(token), wrapped), token)
        except SealError:
            return None
        if identifier_of_field(code) is not None:
            return plaintext.decode()
        value = orjson.loads(plaintext)
        return value if isinstance(value, str) else plaintext.decode()

    def pe_reveal(payload: str | None, keys: dict[str, bytes] | None) -> str | None:
        if payload is None:
            return None
        document = orjson.loads(payload)
        found: list[str] = []
        _collect(document, found)
        revealed: dict[str, Any] = {}
        for token in found:
            ref = token_ref(token)
            wrapped = (keys or {}).get(ref)
            if wrapped is None:
                revealed[token] = None
                continue
            try:
                code, plaintext = open_token(cipher_for(ref, bytes(wrapped)), token)
            except SealError:
                revealed[token] = None
                continue
            revealed[token] = decode_plaintext(code, plaintext)
        return orjson.dumps(_replace(document, revealed)).decode()

    # "special": the functions see NULLs (an erased key is a NULL from the LEFT JOIN).
    con.create_function(  # type: ignore[call-overload]
        "pe_open", pe_open, ["VARCHAR", "BLOB"], "VARCHAR", null_handling="special"
    )
    con.create_function(  # type: ignore[call-overload]
        "pe_reveal",
        pe_reveal,
        ["VARCHAR", "MAP(VARCHAR, BLOB)"],
        "VARCHAR",
        null_handling="special",
    )
