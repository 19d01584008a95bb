"""The built-in redactors, custom ones, and how overlapping spans are settled."""

from __future__ import annotations

import re

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.privacy import (
    CREDIT_CARD,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    PHONE,
    US_SSN,
    RedactionSession,
    luhn_valid,
    regex,
    spans_of,
)


def found(text: str, *redactors: object) -> list[str]:
    return [text[start:end] for start, end, _ in spans_of(text, list(redactors))]


def test_email_addresses_are_found_without_their_surrounding_punctuation() -> None:
    text = "Write to jane.doe+news@mail.example.co.uk, or (bob@example.org)."
    assert found(text, EMAIL) == ["jane.doe+news@mail.example.co.uk", "bob@example.org"]
    assert found("an @ sign alone, user@localhost and a@b.c are not addresses", EMAIL) == []


@pytest.mark.parametrize(
    "phone",
    ["+1 (415) 555-0132", "415-555-0132", "(415) 555 0132", "+44 20 7946 0958", "+33612345678", "0612345678", "+33 6 12 34 56 78"],
)
def test_phone_numbers_in_common_formats_are_found(phone: str) -> None:
    assert found(f"call {phone} today", PHONE) == [phone]


@pytest.mark.parametrize("not_phone", ["2024-01-15", "12:30:45", "order 1234567", "3.14159", "v1.2.3", "555-0132"])
def test_dates_times_and_short_numbers_are_not_phones(not_phone: str) -> None:
    assert found(not_phone, PHONE) == []


def test_luhn_accepts_card_numbers_and_rejects_other_digit_runs() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")  # Amex, 15 digits
    assert not luhn_valid("4111111111111112")
    text = "card 4111 1111 1111 1111, tracking 4111 1111 1111 1112, id 1234567890123456, amex 3782-822463-10005"
    assert found(text, CREDIT_CARD) == ["4111 1111 1111 1111", "3782-822463-10005"]


def test_numbers_written_next_to_each_other_are_each_found() -> None:
    text = "jo@example.com +1 (415) 555-0101 4111 1111 1111 1111"
    assert [(text[s:e], kind) for s, e, kind in spans_of(text, [EMAIL, PHONE, CREDIT_CARD])] == [
        ("jo@example.com", "EMAIL"),
        ("+1 (415) 555-0101", "PHONE"),
        ("4111 1111 1111 1111", "CREDIT_CARD"),
    ]


def test_a_card_number_followed_by_more_digits_is_still_found() -> None:
    assert found("card 4111 1111 1111 1111 123 exp", CREDIT_CARD) == ["4111 1111 1111 1111"]


def test_a_card_number_is_a_card_even_where_a_phone_pattern_also_matches() -> None:
    text = "pay with 378282246310005"
    assert [kind for _, _, kind in spans_of(text, [PHONE, CREDIT_CARD])] == ["CREDIT_CARD"]


def test_an_ip_address_is_an_ip_address_even_where_a_phone_pattern_also_matches() -> None:
    assert [kind for _, _, kind in spans_of("host 192.168.100.200", [PHONE, IP_ADDRESS])] == ["IP_ADDRESS"]


def test_ip_addresses_v4_and_v6_that_parse() -> None:
    text = "from 192.168.1.20, 2001:db8::8a2e:370:7334 and ::1; not 999.1.1.1 nor 12:30:45 nor 1.2.3"
    assert found(text, IP_ADDRESS) == ["192.168.1.20", "2001:db8::8a2e:370:7334", "::1"]
    assert found("ends at 10.0.0.1.", IP_ADDRESS) == ["10.0.0.1"]


def test_iban_and_us_ssn_are_checked() -> None:
    assert found("IBAN GB82 WEST 1234 5698 7654 32 ok", IBAN) == ["GB82 WEST 1234 5698 7654 32"]
    assert found("IBAN GB83 WEST 1234 5698 7654 32", IBAN) == []  # checksum fails
    assert found("ssn 123-45-6789, not 000-12-3456 nor 666-12-3456", US_SSN) == ["123-45-6789"]


def test_custom_redactors_regex_compiled_pattern_and_callable() -> None:
    employee = regex(r"EMP-\d{5}", "EMPLOYEE_ID")
    bare = re.compile(r"secret-\w+")

    def names(text: str) -> list[tuple[int, int, str]]:
        start = text.find("Ada Lovelace")
        return [] if start < 0 else [(start, start + len("Ada Lovelace"), "PERSON")]

    session = RedactionSession()
    text = "Ada Lovelace (EMP-12345) holds secret-sauce"
    redacted = session.redact_text(text, [employee, bare, names])
    assert redacted == "<PERSON_1> (<EMPLOYEE_ID_1>) holds <REDACTED_1>"
    assert session.restore_text(redacted) == text


def test_a_kind_must_make_a_placeholder_the_restorer_can_find() -> None:
    with pytest.raises(ConfigurationError, match="upper-case"):
        regex(r"x", "employee id")
    with pytest.raises(ConfigurationError, match="upper-case"):
        spans_of("x", [lambda text: [(0, 1, "lower")]])


def test_the_setting_accepts_redactors_only() -> None:
    with dspex.context(redactors=[EMAIL, re.compile("x"), lambda t: []]):
        assert len(dspex.settings.redactors) == 3
    with pytest.raises(ConfigurationError, match="redactors"):
        dspex.configure(redactors=["EMAIL"])
    with pytest.raises(ConfigurationError, match="redactors"):
        dspex.configure(redactors=EMAIL)
    dspex.configure(redactors=None)
    assert dspex.settings.redactors == []


def test_presidio_is_optional() -> None:
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigurationError, match="presidio"):
            dspex.privacy.PresidioRedactor()
    else:  # pragma: no cover - only where the extra is installed
        redactor = dspex.privacy.PresidioRedactor(["EMAIL_ADDRESS"])
        assert found("mail jane@example.com", redactor) == ["jane@example.com"]


def test_a_card_number_right_after_other_digits_is_found() -> None:
    assert found("ref 12 4111 1111 1111 1111", CREDIT_CARD) == ["4111 1111 1111 1111"]


def test_a_text_searched_clean_once_is_still_searched_with_other_redactors() -> None:
    text = "reach jo@example.com"
    assert found(text, PHONE) == []  # remembered as clean for PHONE alone
    assert found(text, PHONE, EMAIL) == ["jo@example.com"]


def test_the_built_ins_pickle_and_work_after() -> None:
    import pickle

    for redactor in (EMAIL, PHONE, CREDIT_CARD, IP_ADDRESS, IBAN, US_SSN):
        copy = pickle.loads(pickle.dumps(redactor))
        assert (copy.kind, copy.pattern, copy.priority) == (redactor.kind, redactor.pattern, redactor.priority)
    assert found("card 4111 1111 1111 1111 123", pickle.loads(pickle.dumps(CREDIT_CARD))) == ["4111 1111 1111 1111"]
