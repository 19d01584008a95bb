"""Detectors of personal data: each finds spans ``(start, end, kind)`` in a text.

A redactor is anything `spans_of` accepts:

- a callable ``text -> iterable of (start, end, kind)`` (or ``(start, end)``: kind
  ``REDACTED``), e.g. a function of your own or `PresidioRedactor`;
- a compiled regular expression (each match is a span of kind ``REDACTED``), or
  ``dspex.privacy.regex(pattern, kind)`` to name the kind.

The built-ins (`EMAIL`, `PHONE`, `CREDIT_CARD`, `IP_ADDRESS`, `IBAN`, `US_SSN`) are
regular expressions with a check where one exists: a card number must pass Luhn, an
IBAN its mod-97 check, an IP address must parse. A redactor may carry a ``priority``
(int, default 0): where spans of two redactors overlap, the higher priority wins,
then the longer span.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from dspex.errors import ConfigurationError

Span = tuple[int, int, str]

DEFAULT_KIND = "REDACTED"
_KIND = re.compile(r"[A-Z][A-Z0-9_]*")


@runtime_checkable
class Redactor(Protocol):
    """Finds the personal data in a text, as ``(start, end, kind)`` spans."""

    def __call__(self, text: str) -> Iterable[tuple[int, int, str]]: ...


def _checked_kind(kind: str) -> str:
    # The kind names the placeholder (<KIND_1>): upper-case letters, digits and _,
    # so a placeholder is one token the restoring pattern can find again.
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ConfigurationError(
            f"a redactor's kind names its placeholders (<KIND_1>) and must be upper-case "
            f"letters, digits and underscores starting with a letter, e.g. 'EMPLOYEE_ID'; got {kind!r}"
        )
    return kind


@dataclass(frozen=True)
class RegexRedactor:
    """Every match of ``pattern`` is a span of ``kind``; ``check(matched_text)``, when
    given, must also return True (e.g. a checksum). ``shorten(matched_text)``: whether a
    match that failed its check may hold a shorter one from the same start (a run of
    digits longer than a card number); never tried when None."""

    pattern: re.Pattern[str]
    kind: str
    check: Callable[[str], bool] | None = None
    priority: int = 0
    shorten: Callable[[str], bool] | None = None
    #: a cheap test a text must pass to be searched at all (a text without "@" holds no
    #: e-mail address): most text sent to an LM holds none of a kind
    prefilter: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        _checked_kind(self.kind)

    def __call__(self, text: str) -> list[Span]:
        found: list[Span] = []
        if self.prefilter is not None and not self.prefilter(text):
            return found
        position = 0
        while (match := self.pattern.search(text, position)) is not None:
            start = match.start()
            end = self._accepted_end(text, match)
            if end is None:
                # Rejected. A match too long to pass may hold one starting later (a card
                # number right after other digits): look again one character on.
                too_long = self.shorten is not None and self.shorten(match.group(0))
                position = start + 1 if too_long else max(match.end(), start + 1)
                continue
            found.append((start, end, self.kind))
            position = end
        return found

    def _accepted_end(self, text: str, match: re.Match[str]) -> int | None:
        start, end = match.span()
        if end == start:
            return None
        if self.check is None or self.check(match.group(0)):
            return end
        if self.shorten is None or not self.shorten(match.group(0)):
            return None
        # The greedy match failed its check: a shorter one from the same start, ending at
        # a word boundary of the text, may pass (a phone number followed by other digits).
        for cut in range(end - 1, start, -1):
            if text[cut].isalnum() or not text[cut - 1].isalnum():
                continue
            shorter = self.pattern.fullmatch(text, start, cut)
            if shorter is not None and self.check(shorter.group(0)):
                return cut
        return None

    def __repr__(self) -> str:
        return f"dspex.privacy.regex({self.pattern.pattern!r}, {self.kind!r})"


def regex(pattern: str | re.Pattern[str], kind: str = DEFAULT_KIND, *, flags: int = 0) -> RegexRedactor:
    """A redactor replacing every match of ``pattern`` by ``<KIND_n>`` placeholders."""
    compiled = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
    return RegexRedactor(compiled, _checked_kind(kind))


# --- checks ---------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number passes (digits only)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_number(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _phone_number(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    # Ten digits at least (a national number with its area code), or seven with an
    # explicit country code or area code in brackets: fewer are dates, amounts, ids.
    if text.startswith("+") or "(" in text:
        return 7 <= digits <= 15
    return 10 <= digits <= 15


def _has_at_sign(text: str) -> bool:
    return "@" in text


_IP_SHAPE = re.compile(r"\d\.\d|[0-9A-Fa-f]?:[0-9A-Fa-f]?:")


def _may_hold_ip_address(text: str) -> bool:
    return _IP_SHAPE.search(text) is not None


def _more_digits_than(limit: int) -> Callable[[str], bool]:
    # a partial of a module-level function: the built-ins pickle with plain pickle too
    return functools.partial(_has_more_digits_than, limit)


def _has_more_digits_than(limit: int, text: str) -> bool:
    return sum(c.isdigit() for c in text) > limit


def _ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _iban(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _us_ssn(text: str) -> bool:
    area, group, serial = text.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


# --- the built-ins ----------------------------------------------------------------------

EMAIL = RegexRedactor(
    re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"),
    "EMAIL",
    prefilter=_has_at_sign,
)
"""E-mail addresses."""

PHONE = RegexRedactor(
    re.compile(
        # a +country code (and maybe an (area code)), an (area code), or else ten digits
        # ahead (checked here, so dates and short numbers fail fast)
        r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?|\(\d{1,4}\)[\s.-]?|(?=(?:[\s.-]?\d){10}))"
        r"\d{1,4}(?:[\s.-]?\d{2,4}){1,5}(?!\w)"
    ),
    "PHONE",
    check=_phone_number,
    shorten=_more_digits_than(15),  # a phone number run into other digits
)
"""Phone numbers: 10 to 15 digits in groups, or 7 and more after a +country code or an
(area code)."""

CREDIT_CARD = RegexRedactor(
    re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
    "CREDIT_CARD",
    check=_card_number,
    priority=10,
    shorten=_more_digits_than(13),  # a card number followed by other digits (a CVV)
)
"""Payment card numbers: 13 to 19 digits (spaces or dashes between them allowed) that
pass the Luhn check."""

_IPV4 = r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IP_ADDRESS = RegexRedactor(
    re.compile(
        rf"(?<![\w.:])(?:{_IPV4}|(?:[0-9A-Fa-f]{{0,4}}:){{2,7}}(?:[0-9A-Fa-f]{{1,4}}|{_IPV4})?)(?!\.?\w|:)"
    ),
    "IP_ADDRESS",
    check=_ip_address,
    prefilter=_may_hold_ip_address,
    priority=5,  # parsed: more certain than a phone pattern over the same digits
)
"""IPv4 and IPv6 addresses (ones that parse)."""

IBAN = RegexRedactor(
    re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w)"),
    "IBAN",
    check=_iban,
    priority=10,
)
"""International bank account numbers that pass the mod-97 check."""

US_SSN = RegexRedactor(re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"), "US_SSN", check=_us_ssn)
"""US social security numbers written ddd-dd-dddd."""

DEFAULT_REDACTORS: tuple[RegexRedactor, ...] = (EMAIL, PHONE, CREDIT_CARD, IP_ADDRESS)
"""The set ``redactors="default"`` names."""


class PresidioRedactor:
    """Microsoft Presidio's analyzer as a redactor (``pip install 'dspex[privacy]'``).

    ``entities``: the Presidio entity names to find (None: all it knows); each becomes
    the kind of its placeholders (``PERSON`` -> ``<PERSON_1>``). The analyzer is built in
    each process on first use, not pickled, so the redactor ships to Ray workers.
    """

    def __init__(
        self,
        entities: Sequence[str] | None = None,
        *,
        language: str = "en",
        score_threshold: float = 0.5,
        priority: int = 0,
    ) -> None:
        try:
            import presidio_analyzer  # noqa: F401
        except ImportError as exc:
            raise ConfigurationError(
                "PresidioRedactor needs presidio-analyzer (and a spaCy model): "
                "pip install 'dspex[privacy]' && python -m spacy download en_core_web_lg"
            ) from exc
        self.entities = None if entities is None else list(entities)
        self.language = language
        self.score_threshold = score_threshold
        self.priority = priority
        self._analyzer: Any = None

    def __call__(self, text: str) -> list[Span]:
        if self._analyzer is None:
            from presidio_analyzer import AnalyzerEngine

            self._analyzer = AnalyzerEngine()
        results = self._analyzer.analyze(
            text=text, entities=self.entities, language=self.language,
            score_threshold=self.score_threshold,
        )
        return [(r.start, r.end, re.sub(r"[^A-Z0-9_]", "_", r.entity_type.upper())) for r in results]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_analyzer": None}


# --- running a list of redactors -----------------------------------------------------


def check_redactors(redactors: Any) -> bool:
    """Whether ``redactors`` is a valid setting: a list or tuple of redactors."""
    return isinstance(redactors, list | tuple) and all(
        isinstance(r, re.Pattern) or callable(r) for r in redactors
    )


# Texts in which the redactors found nothing (a signature's system message, its demos):
# sent again with every call, they are not searched again. Only clean texts are kept, so
# this holds no personal data the redactors know of. Bounded; cleared when full.
_CLEAN_TEXTS_MAX = 2048
_clean_texts: dict[tuple[tuple[Any, ...], str], None] = {}


def spans_of(text: str, redactors: Sequence[Any]) -> list[Span]:
    """The non-overlapping spans the redactors find in ``text``, in text order.

    Higher priorities go first, and what they find is masked before the next run: a
    phone pattern then stops where a card number begins instead of swallowing it.
    Within one priority the longer span wins, then the earlier one."""
    try:
        key: tuple[tuple[Any, ...], str] | None = (tuple(redactors), text)
        if key in _clean_texts:
            return []
    except TypeError:  # a redactor that cannot be hashed: search every time
        key = None
    spans = _search(text, redactors)
    if not spans and key is not None:
        if len(_clean_texts) >= _CLEAN_TEXTS_MAX:
            _clean_texts.clear()
        _clean_texts[key] = None
    return spans


def _search(text: str, redactors: Sequence[Any]) -> list[Span]:
    levels = sorted({_priority(r) for r in redactors}, reverse=True)
    taken: list[Span] = []
    searched = text
    for level in levels:
        candidates: list[Span] = []
        for redactor in redactors:
            if _priority(redactor) == level:
                candidates.extend(_found(redactor, searched))
        candidates.sort(key=lambda c: (-(c[1] - c[0]), c[0]))
        chosen: list[Span] = []
        for start, end, kind in candidates:
            if all(end <= s or start >= e for s, e, _ in taken) and all(
                end <= s or start >= e for s, e, _ in chosen
            ):
                chosen.append((start, end, kind))
        if chosen and level != levels[-1]:
            searched = _masked(searched, chosen)
        taken.extend(chosen)
    taken.sort()
    return taken


def _priority(redactor: Any) -> int:
    return int(getattr(redactor, "priority", 0))


def _found(redactor: Any, text: str) -> list[Span]:
    if isinstance(redactor, re.Pattern):
        raw: Iterable[Any] = ((m.start(), m.end()) for m in redactor.finditer(text))
    else:
        raw = redactor(text)
    spans: list[Span] = []
    for span in raw:
        start, end = int(span[0]), int(span[1])
        kind = _checked_kind(str(span[2])) if len(span) > 2 else DEFAULT_KIND
        if 0 <= start < end <= len(text):
            spans.append((start, end, kind))
    return spans


_MASK = "\x00"  # neither a word character nor a separator any pattern accepts


def _masked(text: str, spans: Sequence[Span]) -> str:
    parts: list[str] = []
    last = 0
    for start, end, _ in sorted(spans):
        parts.append(text[last:start])
        parts.append(_MASK * (end - start))
        last = end
    parts.append(text[last:])
    return "".join(parts)


__all__ = [
    "CREDIT_CARD",
    "DEFAULT_REDACTORS",
    "EMAIL",
    "IBAN",
    "IP_ADDRESS",
    "PHONE",
    "US_SSN",
    "PresidioRedactor",
    "Redactor",
    "RegexRedactor",
    "Span",
    "check_redactors",
    "luhn_valid",
    "regex",
    "spans_of",
]
