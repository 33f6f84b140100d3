"""Identifier normalisation: emails, phones, junk placeholders and priority order."""

from __future__ import annotations

import pytest

from profile_engine.events import Identifier
from profile_engine.identifiers import is_junk, normalise, normalise_all


def test_email_is_trimmed_and_lower_cased() -> None:
    assert normalise("email", "  Ann.Lee@Example.COM \t") == Identifier(
        "email", "ann.lee@example.com"
    )


@pytest.mark.parametrize("raw", ["ann", "ann@", "@example.com", "ann@@example.com", "a b@c.com"])
def test_email_failing_syntax_is_kept_but_marked_invalid(raw: str) -> None:
    ident = normalise("email", raw)
    assert ident is not None
    assert ident.valid is False
    assert ident.value == raw.strip().lower()


def test_email_check_needs_no_dns() -> None:
    # A syntactically fine address on a domain that cannot exist is still valid.
    assert normalise("email", "x@no-such-domain-4f9a2c.com") == Identifier(
        "email", "x@no-such-domain-4f9a2c.com", True
    )


@pytest.mark.parametrize(
    "raw", ["(415) 555-2671", "415.555.2671", "+1 415 555 2671", "14155552671", " 4155552671 "]
)
def test_us_phone_formats_become_e164(raw: str) -> None:
    assert normalise("phone", raw) == Identifier("phone", "+14155552671", True)


def test_phone_region_is_a_setting() -> None:
    assert normalise("phone", "020 7946 0018", phone_region="GB") == Identifier(
        "phone", "+442079460018", True
    )
    # The same digits mean nothing in the default US region.
    assert normalise("phone", "020 7946 0018") == Identifier("phone", "020 7946 0018", False)


@pytest.mark.parametrize("raw", ["12", "not a phone", "+1 555"])
def test_phone_failing_to_parse_is_kept_but_marked_invalid(raw: str) -> None:
    assert normalise("phone", raw) == Identifier("phone", raw, False)


@pytest.mark.parametrize(
    "raw",
    ["", "   ", None, "null", "NULL", "None", "undefined", "Anonymous", "GUEST", "0", "-1",
     "NaN", "[object Object]", " nan ", 0, -1],
)  # fmt: skip
def test_junk_values_are_dropped_for_every_identifier_type(raw: object) -> None:
    assert is_junk(raw)
    for id_type in ("customer_id", "email", "phone", "push_token", "anonymous_id"):
        assert normalise(id_type, raw) is None


@pytest.mark.parametrize("raw", ["00", "guest1", "nullable", "1", "anon"])
def test_near_junk_values_are_real(raw: str) -> None:
    assert not is_junk(raw)
    assert normalise("customer_id", raw) == Identifier("customer_id", raw, True)


def test_other_identifier_types_are_only_trimmed() -> None:
    assert normalise("customer_id", "  C-0042 ") == Identifier("customer_id", "C-0042")
    assert normalise("push_token", "AbC") == Identifier("push_token", "AbC")
    assert normalise("customer_id", 42) == Identifier("customer_id", "42")


def test_normalise_all_orders_by_priority_and_drops_junk() -> None:
    result = normalise_all(
        {
            "anonymous_id": "a-1",
            "push_token": "undefined",
            "phone": "4155552671",
            "email": "ANN@example.com",
            "customer_id": "C1",
        }
    )
    assert result == (
        Identifier("customer_id", "C1"),
        Identifier("email", "ann@example.com"),
        Identifier("phone", "+14155552671"),
        Identifier("anonymous_id", "a-1"),
    )


def test_normalise_all_of_only_junk_is_empty() -> None:
    assert normalise_all({"email": "null", "anonymous_id": "guest"}) == ()
