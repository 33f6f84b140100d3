"""Identifier normalisation: emails, phones, junk placeholders and priority order."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from profile_engine.events import Identifier
from profile_engine.identifiers import (
    _PLAIN_EMAIL,
    is_junk,
    nanp_phone,
    nanp_valid,
    normalise,
    normalise_all,
    normalise_email,
    normalise_phone,
    plain_valid_email,
)


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


# --- the fast paths give exactly the libraries' verdicts ------------------------------------


def library_email_valid(value: str) -> bool:
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def library_phone(value: str, region: str = "US") -> tuple[str, bool]:
    """phonenumbers alone, as the normalisation used it before any fast path."""
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return value, False
    if not phonenumbers.is_valid_number(parsed):
        return value, False
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), True


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_EMAIL_LIKE = st.one_of(
    st.from_regex(_PLAIN_EMAIL, fullmatch=True),
    st.builds(
        lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
        st.from_regex(r"[a-z0-9._+-]{1,12}", fullmatch=True),
        st.lists(_LABEL, min_size=1, max_size=3),
        st.sampled_from(["com", "test", "invalid", "local", "onion", "arpa", "co", "c0m", "x"]),
    ),
    st.text(alphabet="ab.@-+_1é", max_size=20),
)


@settings(max_examples=500, deadline=None)
@given(_EMAIL_LIKE)
def test_the_email_fast_path_never_accepts_what_email_validator_refuses(value: str) -> None:
    if plain_valid_email(value):
        assert library_email_valid(value), value


@settings(max_examples=300, deadline=None)
@given(_EMAIL_LIKE)
def test_email_normalisation_gives_email_validators_verdict(value: str) -> None:
    normalised, valid = normalise_email(value)
    assert normalised == value.strip().lower()
    assert valid == library_email_valid(normalised)


@pytest.mark.parametrize(
    "value",
    ["a@x.test", "a@localhost", "a@xn--bcher-kva.com", "a@com", "a..b@x.com", "é@x.com", "a@x.c0m"],
)
def test_the_email_fast_path_defers_unusual_addresses(value: str) -> None:
    assert not plain_valid_email(value)


_DIGIT = st.sampled_from("0123456789")
_SEPARATOR = st.sampled_from(["", " ", ".", "-"])
_NANP_TEXT = st.builds(
    lambda prefix, paren, area, sep1, exchange, sep2, line: (
        f"{prefix}{'(' + area + ')' if paren else area}{sep1}{exchange}{sep2}{line}"
    ),
    st.sampled_from(["", "+1", "+1 ", "+1-", "+1.", "1", "1 ", "+44 ", "+"]),
    st.booleans(),
    st.text(_DIGIT, min_size=3, max_size=3),
    _SEPARATOR,
    st.text(_DIGIT, min_size=3, max_size=3),
    _SEPARATOR,
    st.text(_DIGIT, min_size=4, max_size=4),
)


@settings(max_examples=800, deadline=None)
@given(_NANP_TEXT)
def test_the_phone_fast_path_gives_phonenumbers_verdict(text: str) -> None:
    fast = nanp_phone(text, "US")
    if fast is not None:
        assert fast == library_phone(text), text


@settings(max_examples=300, deadline=None)
@given(st.one_of(_NANP_TEXT, st.text(alphabet="+()0123456789 .-x", max_size=18)))
def test_phone_normalisation_gives_phonenumbers_verdict(text: str) -> None:
    assert normalise_phone(text) == library_phone(text.strip())
    assert normalise_phone(text, "GB") == library_phone(text.strip(), "GB")


def test_nanp_validity_matches_phonenumbers_on_random_numbers() -> None:
    # Area codes and exchanges of every kind, valid or not: the NANP regions' own patterns.
    rng = random.Random(20260101)
    numbers = [f"{rng.randint(2, 9)}{rng.randrange(10**9):09d}" for _ in range(2000)]
    numbers += ["4155552671", "8005550100", "9005550100", "6845550100", "2685550100"]
    for number in numbers:
        expected = phonenumbers.is_valid_number(
            phonenumbers.PhoneNumber(country_code=1, national_number=int(number))
        )
        assert nanp_valid(number) == expected, number


def test_the_phone_fast_path_reads_the_common_shapes() -> None:
    for text in ["(415) 555-2671", "415.555.2671", "+1 415 555 2671", "+14155552671"]:
        assert nanp_phone(text, "US") == ("+14155552671", True)
    assert nanp_phone("14155552671", "US") is None  # a national prefix: phonenumbers decides
    assert nanp_phone("415 555 2671", "GB") is None  # other regions: phonenumbers decides
