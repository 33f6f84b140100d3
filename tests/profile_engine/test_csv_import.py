"""CSV rows -> identify events and rejects (the pure part of `profile-engine import`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from profile_engine.attributes import AttributeRegistry
from profile_engine.csv_import import (
    HeaderError,
    LineTap,
    Reject,
    RowConverter,
    convert_records,
    import_event_id,
    plan_columns,
    read_records,
    reject_row,
    rejects_header,
    resolve_id_type,
)
from profile_engine.events import Identify

DIGEST = "ab" * 32
TS_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


@pytest.fixture
def registry(tmp_path: Path) -> AttributeRegistry:
    reg = AttributeRegistry.load(tmp_path / "attrs.json")
    reg.add("vip", "boolean")
    reg.add("points", "long")
    reg.add("note", "string")
    return reg


def run(
    text: str, registry: AttributeRegistry, id_column: str = "email", id_type: str | None = None
) -> list[Identify | Reject]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = next(reader)
    columns = plan_columns(header, registry, id_column, id_type)
    converter = RowConverter(columns, DIGEST, TS_US)
    return list(convert_records(converter, read_records(reader)))


def test_valid_rows_become_identify_events_with_typed_traits(registry: AttributeRegistry) -> None:
    results = run(
        "Email,First_Name,vip,points\n"
        " Ada@Example.com ,Ada,TRUE,42\n"
        "bob@example.com,Bob,false,-1\n",
        registry,
    )
    first, second = results
    assert isinstance(first, Identify) and isinstance(second, Identify)
    assert [(i.id_type, i.value) for i in first.identifiers] == [("email", "ada@example.com")]
    assert first.traits == {"first_name": "Ada", "vip": True, "points": 42}
    assert second.traits == {"first_name": "Bob", "vip": False, "points": -1}
    assert first.timestamp_us == TS_US
    assert first.event_id == import_event_id(DIGEST, 2)
    assert second.event_id == import_event_id(DIGEST, 3)


def test_empty_cells_are_not_provided_rather_than_unset(registry: AttributeRegistry) -> None:
    (event,) = run("email,first_name,points\na@example.com,,7\n", registry)
    assert isinstance(event, Identify)
    assert event.traits == {"points": 7}


def test_event_ids_are_deterministic_and_sort_in_file_order() -> None:
    assert import_event_id(DIGEST, 9) == import_event_id(DIGEST, 9)
    assert import_event_id(DIGEST, 9) < import_event_id(DIGEST, 10)
    assert import_event_id(DIGEST, 9) != import_event_id("cd" * 32, 9)


def test_quoting_doubled_quotes_embedded_commas_and_newlines(registry: AttributeRegistry) -> None:
    text = (
        "email,note,first_name\r\n"
        '"a@example.com","Height: 6\'1""","Ada"\r\n'
        'b@example.com,"one, two","multi\r\nline"\r\n'
        "c@example.com,plain,Cy\r\n"
    )
    results = run(text, registry)
    assert all(isinstance(r, Identify) for r in results)
    traits = [r.traits for r in results if isinstance(r, Identify)]
    assert traits[0] == {"note": "Height: 6'1\"", "first_name": "Ada"}
    assert traits[1] == {"note": "one, two", "first_name": "multi\r\nline"}
    # the record after a two-line record starts on physical line 5
    assert results[2].event_id == import_event_id(DIGEST, 5)  # type: ignore[union-attr]


def test_lf_and_crlf_files_give_the_same_events(registry: AttributeRegistry) -> None:
    lf = run("email,points\na@example.com,1\nb@example.com,2\n", registry)
    crlf = run("email,points\r\na@example.com,1\r\nb@example.com,2\r\n", registry)
    assert lf == crlf


def test_invalid_rows_are_rejected_with_line_column_and_rule(registry: AttributeRegistry) -> None:
    text = (
        "email,vip,points,birthday_month\n"
        "ok@example.com,true,1,5\n"
        "bad@example.com,y,1,5\n"
        "also@example.com,true,2,3,extra\n"
        "null,true,1,5\n"
        "not-an-email,true,1,5\n"
        ",true,1,5\n"
        "two@example.com,0,2,3\n"
        "four@example.com,1,x,13\n"
        "\n"
        "last@example.com,FALSE,9,12\n"
    )
    results = run(text, registry)
    accepted = [r for r in results if isinstance(r, Identify)]
    rejected = [r for r in results if isinstance(r, Reject)]
    assert [a.identifiers[0].value for a in accepted] == ["ok@example.com", "last@example.com"]
    messages = [r.message for r in rejected]
    assert messages[0] == "line 3: column vip: boolean must be true or false (any case), got 'y'"
    assert messages[1] == "line 4: expected 4 columns, got 5"
    assert messages[2] == "line 5: column email: 'null' is a placeholder, not an identifier"
    assert messages[3] == "line 6: column email: 'not-an-email' is not a valid email"
    assert messages[4] == "line 7: column email: identifier is empty"
    assert messages[5].startswith("line 8: column vip: boolean")
    # every bad cell of a row is named, not just the first
    assert messages[6].startswith("line 9: column vip: ")
    assert "; column points: long must be an integer" in messages[6]
    assert "; column birthday_month: must be between 1 and 12, got 13" in messages[6]
    assert accepted[1].event_id == import_event_id(DIGEST, 11)  # blank line 10 skipped


def test_reject_rows_keep_the_original_cells_and_add_the_reason() -> None:
    reject = Reject(4, ["a@example.com", "y"], "column vip: boolean must be true or false")
    header = ["email", "vip", "points"]
    assert rejects_header(header) == ["email", "vip", "points", "reason"]
    assert reject_row(reject, len(header)) == [
        "a@example.com",
        "y",
        "",
        "line 4: column vip: boolean must be true or false",
    ]


@pytest.mark.parametrize(
    ("header", "rule"),
    [
        ("email,first_name,shoe_size", "unregistered attribute(s) 'shoe_size'"),
        ("email,first_name,First_Name", "duplicate column 'First_Name' (columns 2 and 3)"),
        ("email,EMAIL", "duplicate column 'EMAIL'"),
        ("mail,first_name", "no id column 'email' in the header"),
        ("email,,points", "header column 2 is empty"),
        ("email,phone", "unregistered attribute(s) 'phone'"),
    ],
)
def test_bad_headers_refuse_the_whole_file(
    registry: AttributeRegistry, header: str, rule: str
) -> None:
    with pytest.raises(HeaderError) as caught:
        run(header + "\na@example.com,x,y\n", registry)
    assert rule in str(caught.value)


def test_header_is_matched_case_insensitively(registry: AttributeRegistry) -> None:
    columns = plan_columns(["EMAIL", " Points ", "VIP"], registry, "Email", None)
    assert columns.id_index == 0
    assert [name for _, name, _ in columns.traits] == ["points", "vip"]


@pytest.mark.parametrize(
    ("column", "given", "expected"),
    [
        ("email", None, "email"),
        ("customerId", None, "customer_id"),
        ("Customer_ID", None, "customer_id"),
        ("crm_key", "customer_id", "customer_id"),
        ("mobile", "phone", "phone"),
    ],
)
def test_id_type_defaults_to_the_column_name(column: str, given: str | None, expected: str) -> None:
    assert resolve_id_type(column, given) == expected


def test_id_type_must_be_known_or_given() -> None:
    with pytest.raises(HeaderError, match="pass --id-type"):
        resolve_id_type("crm_key", None)
    with pytest.raises(HeaderError, match="--id-type must be one of"):
        resolve_id_type("email", "fax")


def test_phone_ids_are_normalised_to_e164(registry: AttributeRegistry) -> None:
    results = run("mobile,points\n(415) 555-2671,1\n12,2\n", registry, "mobile", "phone")
    event, reject = results
    assert isinstance(event, Identify)
    assert event.identifiers[0].value == "+14155552671"
    assert isinstance(reject, Reject) and "is not a valid phone" in reject.message


def test_customer_ids_are_kept_verbatim(registry: AttributeRegistry) -> None:
    (event,) = run("customerId,points\nCRM-00042,1\n", registry, "customerId")
    assert isinstance(event, Identify)
    assert event.identifiers[0].key == ("customer_id", "CRM-00042")


def test_malformed_quoting_rejects_that_record_and_goes_on(registry: AttributeRegistry) -> None:
    results = run('email,note\na@example.com,"bad"quote\nb@example.com,fine\n', registry)
    reject, event = results
    assert isinstance(reject, Reject)
    assert reject.message.startswith("line 2: malformed CSV:")
    assert isinstance(event, Identify) and event.traits == {"note": "fine"}


def test_an_unclosed_quote_at_the_end_is_rejected_not_swallowed(
    registry: AttributeRegistry,
) -> None:
    results = run('email,note\na@example.com,ok\nb@example.com,"never closed\n', registry)
    assert isinstance(results[0], Identify)
    assert isinstance(results[1], Reject)
    assert results[1].message == "line 3: malformed CSV: unexpected end of data"


def test_a_malformed_record_keeps_its_lines_as_read_for_the_rejects_file(
    registry: AttributeRegistry,
) -> None:
    """A quote opened and never closed takes the lines after it into one record: they reach
    the rejects file whole, not as a reason alone."""
    text = 'email,note\ng3@example.com,"unterminated\nh@example.com,x\ni@example.com,y\n'
    tap = LineTap(io.StringIO(text, newline=""))
    reader = csv.reader(tap, strict=True)
    columns = plan_columns(next(reader), registry, "email", None)
    converter = RowConverter(columns, DIGEST, TS_US)
    (reject,) = convert_records(converter, read_records(reader, tap))
    assert isinstance(reject, Reject)
    expected = "line 2: malformed CSV: unexpected end of data; lines 2-4 kept as read"
    assert reject.message == f"{expected} in the first column"
    assert reject.cells == ['g3@example.com,"unterminated\nh@example.com,x\ni@example.com,y']


# --- the same rule book as every other way in -----------------------------------------------


def test_cells_break_the_rule_books_text_rules_like_json_values(
    registry: AttributeRegistry,
) -> None:
    results = run(
        "email,note\na@example.com,bad\x00note\nb\x00@example.com,fine\nc@example.com,fine\n",
        registry,
    )
    first, second, third = results
    assert isinstance(first, Reject)
    assert first.message == "line 2: column note: must not contain NUL characters"
    assert isinstance(second, Reject)
    assert second.message == "line 3: column email: must not contain NUL characters"
    assert isinstance(third, Identify)


def test_an_identifier_cell_longer_than_the_limit_is_refused(registry: AttributeRegistry) -> None:
    (reject,) = run(f"customer_id,note\n{'c' * 1001},x\n", registry, "customer_id")
    assert isinstance(reject, Reject)
    assert reject.message == "line 2: column customer_id: longer than 1000 characters"


def test_an_import_time_outside_the_event_time_window_rejects_the_rows(
    registry: AttributeRegistry,
) -> None:
    reader = csv.reader(io.StringIO("email,note\na@example.com,x\n", newline=""))
    columns = plan_columns(next(reader), registry, "email", None)
    converter = RowConverter(columns, DIGEST, timestamp_us=0)
    (reject,) = convert_records(converter, read_records(reader))
    assert isinstance(reject, Reject)
    assert reject.message.startswith(
        "line 2: timestamp: 1970-01-01T00:00:00Z is outside the accepted event-time window"
    )
