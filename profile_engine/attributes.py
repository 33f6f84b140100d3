"""The attribute registry: which traits a profile may carry, and the type of each.

Standard attributes (first_name, birthday_day, ...) are built in (schemas/
standard_attributes.json) and always present; custom attributes live in a small versioned
JSON file (``{"version": n, "attributes": {"name": {"type": "long"}}}``) that producers,
importers and rebuilds all read. Identify traits are checked against it at the edge: an
unregistered trait or a value of the wrong type is refused, never silently stored.

Two entry points share the same rules:
- ``validate_traits`` for JSON events (ContractError "traits.<name>: <rule>");
- ``validate_text`` / ``text_parser`` for CSV cells (ValueError "<rule>").
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from profile_engine.contract import ContractError
from profile_engine.events import ID_PRIORITY

TraitScalar = str | int | float | bool | None
TextParser = Callable[[str], TraitScalar]

ATTRIBUTES_ENV = "PROFILE_ENGINE_ATTRIBUTES"
DEFAULT_ATTRIBUTES_FILE = "profile-attributes.json"

TYPES: tuple[str, ...] = ("string", "boolean", "long", "double", "date", "datetime", "epoch")
SQL_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "boolean": "BOOLEAN",
    "long": "BIGINT",
    "double": "DOUBLE",
    "date": "DATE",
    "datetime": "TIMESTAMP",
    "epoch": "BIGINT",
}

# Letters, digits and underscores, starting with a letter (booleanField, LTV, vip_level): the
# case is kept as registered, and names match case-insensitively everywhere (a CSV header
# `ltv`, a trait "Ltv" and the SQL column LTV all mean the attribute LTV), as SQL identifiers do.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\Z")
# Identifiers are never traits, and profile_id is the key column of the typed view.
RESERVED_NAMES = frozenset({*ID_PRIORITY, "profile_id"})

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

_LONG_RE = re.compile(r"^-?[0-9]+\Z")
_EPOCH_RE = re.compile(r"^[0-9]+\Z")
# Dot decimals with an optional exponent; no comma decimals, no nan/inf, no hex.
_DOUBLE_RE = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_DATETIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z?\Z")


# -- text rules (CSV cells, and the string form of date/datetime in JSON) -----------------


def parse_string(text: str) -> str:
    return text


def parse_boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ValueError(f"boolean must be true or false (any case), got {text!r}")


def _check_long_range(value: int) -> int:
    if not LONG_MIN <= value <= LONG_MAX:
        raise ValueError(f"long out of the 64-bit signed range: {value}")
    return value


def parse_long(text: str) -> int:
    stripped = text.strip()
    if not _LONG_RE.match(stripped):
        raise ValueError(f"long must be an integer like 42 or -7, got {text!r}")
    return _check_long_range(int(stripped))


def parse_double(text: str) -> float:
    stripped = text.strip()
    if not _DOUBLE_RE.match(stripped):
        raise ValueError(f"double must be a number with a dot decimal like -2.3, got {text!r}")
    value = float(stripped)
    if math.isinf(value):
        raise ValueError(f"double out of range: {text!r}")
    return value


def parse_date(text: str) -> str:
    stripped = text.strip()
    if _DATE_RE.match(stripped) is None:
        raise ValueError(f"date must be YYYY-MM-DD, got {text!r}")
    try:
        date.fromisoformat(stripped)  # the shape is fixed above; this checks the calendar
    except ValueError:
        raise ValueError(f"date is not a real calendar date: {text!r}") from None
    return stripped


def parse_datetime(text: str) -> str:
    """Returns the canonical UTC form, always with the trailing Z."""
    stripped = text.strip()
    if _DATETIME_RE.match(stripped) is None:
        raise ValueError(f"datetime must be YYYY-MM-DDTHH:MM:SS with an optional Z, got {text!r}")
    try:
        datetime.fromisoformat(stripped.removesuffix("Z"))  # checks the calendar and clock
    except ValueError:
        raise ValueError(f"datetime is not a real date and time of day: {text!r}") from None
    return stripped if stripped.endswith("Z") else stripped + "Z"


def parse_epoch(text: str) -> int:
    stripped = text.strip()
    if not _EPOCH_RE.match(stripped):
        raise ValueError(f"epoch must be a non-negative integer of seconds, got {text!r}")
    value = int(stripped)
    if value > LONG_MAX:
        raise ValueError(f"epoch out of the 64-bit range: {value}")
    return value


TEXT_PARSERS: dict[str, TextParser] = {
    "string": parse_string,
    "boolean": parse_boolean,
    "long": parse_long,
    "double": parse_double,
    "date": parse_date,
    "datetime": parse_datetime,
    "epoch": parse_epoch,
}


# -- JSON rules (identify traits on the wire) ------------------------------------------------


def _json_string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a JSON string, got {_json_kind(value)}")
    return value


def _json_boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"boolean must be JSON true or false, got {_json_kind(value)}")
    return value


def _json_long(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"long must be a JSON integer, got {_json_kind(value)}")
    return _check_long_range(value)


def _json_double(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"double must be a JSON number, got {_json_kind(value)}")
    as_float = float(value)
    if not math.isfinite(as_float):
        raise ValueError("double must be finite (no NaN or Infinity)")
    return as_float


def _json_date(value: object) -> str:
    return parse_date(_json_string(value))


def _json_datetime(value: object) -> str:
    return parse_datetime(_json_string(value))


def _json_epoch(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"epoch must be a JSON integer, got {_json_kind(value)}")
    if value < 0:
        raise ValueError(f"epoch must be non-negative, got {value}")
    return _check_long_range(value)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


JSON_CHECKS: dict[str, Callable[[object], TraitScalar]] = {
    "string": _json_string,
    "boolean": _json_boolean,
    "long": _json_long,
    "double": _json_double,
    "date": _json_date,
    "datetime": _json_datetime,
    "epoch": _json_epoch,
}


# -- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    type: str
    kind: str  # "standard" | "custom"
    minimum: int | None = None
    maximum: int | None = None
    description: str = ""

    @property
    def sql_type(self) -> str:
        return SQL_TYPES[self.type]

    def rule(self) -> str:
        """Human-readable type (and range) of the attribute."""
        if self.minimum is not None and self.maximum is not None:
            return f"{self.type} {self.minimum}-{self.maximum}"
        return self.type

    def check_range(self, value: TraitScalar) -> TraitScalar:
        if isinstance(value, int) and not isinstance(value, bool):
            low, high = self.minimum, self.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"must be between {low} and {high}, got {value}")
        return value


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"attribute name {name!r} must match ^[A-Za-z][A-Za-z0-9_]{{0,63}}$ "
            "(letters, digits, underscores; starts with a letter)"
        )
    if name_key(name) in RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved: identifiers and profile_id are never traits")
    return name


def name_key(name: str) -> str:
    """The case-insensitive key of an attribute name (ASCII only: names are ASCII, and a
    non-ASCII name such as the Kelvin sign must not lower-case into a registered one)."""
    return name.lower() if name.isascii() else name


def check_type(type_name: str) -> str:
    if type_name not in TYPES:
        raise ValueError(f"unknown attribute type {type_name!r}; one of {', '.join(TYPES)}")
    return type_name


def default_registry_path() -> Path:
    """$PROFILE_ENGINE_ATTRIBUTES, else profile-attributes.json in the current directory."""
    return Path(os.environ.get(ATTRIBUTES_ENV) or DEFAULT_ATTRIBUTES_FILE)


def _standard_attributes() -> dict[str, Attribute]:
    text = resources.files("schemas").joinpath("standard_attributes.json").read_text("utf-8")
    result = {}
    for name, spec in json.loads(text)["attributes"].items():
        result[name] = Attribute(
            name=name,
            type=check_type(spec["type"]),
            kind="standard",
            minimum=spec.get("min"),
            maximum=spec.get("max"),
            description=spec.get("description", ""),
        )
    return result


class AttributeRegistry:
    """Standard attributes plus the custom ones of one registry file."""

    def __init__(
        self, path: Path, custom: Mapping[str, Attribute] | None = None, version: int = 0
    ) -> None:
        self.path = path
        self.version = version
        self._standard = _standard_attributes()
        # Keyed by name_key; each Attribute keeps the name as registered.
        self._custom: dict[str, Attribute] = {}
        for attribute in (custom or {}).values():
            key = name_key(attribute.name)
            if key in self._custom:
                raise ValueError(
                    f"{path}: {attribute.name!r} and {self._custom[key].name!r} name the same "
                    "attribute (names match case-insensitively)"
                )
            self._custom[key] = attribute
        # name as given -> (name as registered, its JSON check)
        self._json_cache: dict[str, tuple[str, Callable[[object], TraitScalar]]] = {}

    # -- loading and saving ---------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str | None = None) -> AttributeRegistry:
        """Read the registry file; a missing file means no custom attributes yet."""
        registry_path = Path(path) if path is not None else default_registry_path()
        if not registry_path.exists():
            return cls(registry_path)
        try:
            document = json.loads(registry_path.read_text(encoding="utf-8"))
            version = int(document.get("version", 0))
            specs = document["attributes"]
            custom = {
                name: Attribute(check_name(name), check_type(spec["type"]), "custom")
                for name, spec in specs.items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{registry_path}: not a valid attribute registry ({error})") from None
        registry = cls(registry_path, custom, version)
        for name in custom:
            if name_key(name) in registry._standard:
                raise ValueError(f"{registry_path}: {name!r} redefines a standard attribute")
        return registry

    def save(self) -> None:
        """Write the custom attributes atomically (readers never see half a file)."""
        document = {
            "version": self.version,
            "attributes": {
                attr.name: {"type": attr.type} for _, attr in sorted(self._custom.items())
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)

    # -- lookups --------------------------------------------------------------------------

    def get(self, name: str) -> Attribute | None:
        """The attribute ``name`` names, in any case (its ``name`` is the registered one)."""
        key = name_key(name)
        return self._standard.get(key) or self._custom.get(key)

    def names(self) -> list[str]:
        """Standard attributes first (in their defined order), then custom ones by name
        (case-insensitively), each as registered."""
        return [*self._standard, *(self._custom[key].name for key in sorted(self._custom))]

    def attributes(self) -> list[Attribute]:
        return [attr for name in self.names() if (attr := self.get(name)) is not None]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    # -- changes --------------------------------------------------------------------------

    def add(self, name: str, type_name: str) -> Attribute:
        """Register a custom attribute; re-adding the same name and type is a no-op."""
        check_name(name)
        check_type(type_name)
        existing = self.get(name)
        if existing is not None:
            if existing.kind == "standard":
                raise ValueError(f"{name!r} is a standard attribute ({existing.rule()})")
            if existing.type != type_name:
                spelled = "" if existing.name == name else f" (as {existing.name!r})"
                raise ValueError(
                    f"{name!r} is already registered as {existing.type}{spelled}; "
                    "a type change would make stored values ill-typed"
                )
            return existing
        attribute = Attribute(name, type_name, "custom")
        self._custom[name_key(name)] = attribute
        self.version += 1
        self._json_cache.clear()
        return attribute

    # -- validation -----------------------------------------------------------------------

    def _require(self, name: str) -> Attribute:
        attribute = self.get(name)
        if attribute is None:
            raise ValueError(
                "not a registered attribute (register it with `profile-engine attributes add`)"
            )
        return attribute

    def text_parser(self, name: str) -> TextParser:
        """A CSV cell parser for one attribute, chosen once per column (the hot path)."""
        attribute = self._require(name)
        parse = TEXT_PARSERS[attribute.type]
        if attribute.minimum is None and attribute.maximum is None:
            return parse

        def parse_in_range(text: str) -> TraitScalar:
            return attribute.check_range(parse(text))

        return parse_in_range

    def validate_text(self, name: str, text: str) -> TraitScalar:
        """One CSV cell -> its typed value, or ValueError naming the rule."""
        return self.text_parser(name)(text)

    def _json_check(self, name: str) -> tuple[str, Callable[[object], TraitScalar]]:
        cached = self._json_cache.get(name)
        if cached is None:
            attribute = self._require(name)
            base = JSON_CHECKS[attribute.type]

            def check_value(value: object) -> TraitScalar:
                return attribute.check_range(base(value))

            cached = (attribute.name, check_value)
            self._json_cache[name] = cached
        return cached

    def validate_traits(self, traits: Mapping[str, TraitScalar]) -> dict[str, TraitScalar]:
        """Identify traits -> their canonical form (names as registered, values in their
        canonical JSON form); ContractError on the first bad one.

        None is always allowed (it unsets the trait).
        """
        result: dict[str, TraitScalar] = {}
        given: dict[str, str] = {}
        for name, value in traits.items():
            try:
                canonical, check = self._json_check(name)
                if canonical in given:
                    raise ValueError(f"names the same attribute as traits.{given[canonical]}")
                given[canonical] = name
                result[canonical] = None if value is None else check(value)
            except ValueError as error:
                raise ContractError(f"traits.{name}: {error}") from None
        return result

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "attributes": {a.name: {"type": a.type, "kind": a.kind} for a in self.attributes()},
        }
