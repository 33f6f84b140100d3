"""The query commands' way to a running server: its HTTP API, with the standard library.

Every answer is the JSON the commands would have computed from the file, so they print the
same output. Errors come back as ``{"error": one line, "kind": bad_input|transient|
needs_operator}`` and are raised here as the same kind, so exit codes match too.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from profile_engine.errors import BadInput, ErrorKind, NeedsOperator, ProfileEngineError, Transient
from profile_engine.server.discovery import ServerInfo
from projections.output_file import output_file

_KINDS: dict[str, type[ProfileEngineError]] = {
    ErrorKind.BAD_INPUT: BadInput,
    ErrorKind.TRANSIENT: Transient,
    ErrorKind.NEEDS_OPERATOR: NeedsOperator,
}
SQL_ROWS = 1_000_000  # the server's maximum


class NotFound(BadInput):
    """The server answered 404 (e.g. no profile for that identifier)."""


class ServerClient:
    def __init__(self, server: ServerInfo, timeout_s: float = 300.0) -> None:
        self.server = server
        self.timeout_s = timeout_s

    # -- the API ------------------------------------------------------------------------------

    def counts(
        self, month: str | None, channel: str | None, as_of: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "GET", "/api/counts", month=month, channel=channel, as_of=as_of
        )
        return result

    def counts_daily(self, first: str, last: str, channel: str | None) -> list[dict[str, Any]]:
        answer = self._json(
            "GET", "/api/counts/daily", channel=channel, **{"from": first, "to": last}
        )
        days: list[dict[str, Any]] = answer["days"]
        return days

    def profile(self, lookup_key: str, as_of: str | None = None) -> dict[str, Any] | None:
        try:
            path = f"/api/profiles/{_path(lookup_key)}"
            result: dict[str, Any] = self._json("GET", path, as_of=as_of)
        except NotFound:
            return None
        return result

    def identifiers(self, lookup_key: str, as_of: str | None = None) -> list[dict[str, Any]] | None:
        try:
            path = f"/api/profiles/{_path(lookup_key)}/identifiers"
            result: list[dict[str, Any]] = self._json("GET", path, as_of=as_of)
        except NotFound:
            return None
        return result

    def sql(self, query: str, limit: int = SQL_ROWS) -> dict[str, Any]:
        """``{"columns": [...], "rows": [[...]], "truncated": bool}``"""
        result: dict[str, Any] = self._json(
            "POST", "/api/sql", body={"query": query, "limit": limit}
        )
        return result

    def export(self, output_format: str, where: str | None, out_path: str) -> int:
        """Stream the export into ``out_path``; the number of profiles written."""
        response = self._open("GET", "/api/export", format=output_format, where=where)
        counter = RowCounter(output_format)
        try:
            with response, output_file(out_path) as out:
                while chunk := _read(response):
                    out.write(chunk)
                    counter.feed(chunk)
        except OSError as error:
            raise BadInput(f"cannot write {out_path}: {error.strerror or error}") from None
        return counter.rows

    def status(self) -> dict[str, Any]:
        """The fold's status document (GET /api/status)."""
        result: dict[str, Any] = self._json("GET", "/api/status")
        return result

    def settings(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/settings")
        return result

    def set_setting(self, key: str, value: Any) -> dict[str, Any]:
        path = f"/api/settings/{_path(key)}"
        result: dict[str, Any] = self._json("PUT", path, body={"value": value})
        return result

    def reset_setting(self, key: str) -> dict[str, Any]:
        path = f"/api/settings/{_path(key)}"
        result: dict[str, Any] = self._json("PUT", path, body={"reset": True})
        return result

    # -- HTTP ---------------------------------------------------------------------------------

    def _json(self, method: str, path: str, body: Any = None, **params: str | None) -> Any:
        with self._open(method, path, body, **params) as response:
            return json.loads(response.read())

    def _open(self, method: str, path: str, body: Any = None, **params: str | None) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = self.server.url + path + (f"?{query}" if query else "")
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.server.token:
            headers["Authorization"] = f"Bearer {self.server.token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as error:
            raise _api_error(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise Transient(
                f"the server of this database at {self.server.url} (pid {self.server.pid}) "
                f"does not answer: {reason}"
            ) from None


def _path(text: str) -> str:
    return urllib.parse.quote(text, safe=":@")


def _api_error(error: urllib.error.HTTPError) -> ProfileEngineError:
    try:
        document = json.loads(error.read())
        message, kind = str(document["error"]), str(document.get("kind", ErrorKind.BAD_INPUT))
    except (ValueError, KeyError, TypeError):
        message, kind = f"the server answered HTTP {error.code} {error.reason}", "needs_operator"
    if error.code == 404:
        return NotFound(message)
    return _KINDS.get(kind, NeedsOperator)(message)


def _read(response: Any) -> bytes:
    try:
        data: bytes = response.read(1 << 20)
    except OSError as error:  # not the file's fault
        raise Transient(f"the server's answer broke off: {error}") from None
    return data


class RowCounter:
    """Counts the rows of an export as its bytes stream past (it may go to a pipe, which
    cannot be read back): JSON Lines, one a line; CSV, the line ends outside quoted values
    (a quote inside one is doubled, so quotes keep their parity), less the header."""

    def __init__(self, output_format: str) -> None:
        self._csv = output_format == "csv"
        self._quoted = False
        self._lines = 0

    def feed(self, chunk: bytes) -> None:
        if not self._csv:
            self._lines += chunk.count(b"\n")
            return
        if b'"' not in chunk:
            if not self._quoted:
                self._lines += chunk.count(b"\n")
            return
        for piece_index, piece in enumerate(chunk.split(b'"')):
            if piece_index:
                self._quoted = not self._quoted
            if not self._quoted:
                self._lines += piece.count(b"\n")

    @property
    def rows(self) -> int:
        return self._lines if not self._csv else max(0, self._lines - 1)
