"""Privacy: personal data in prompts replaced by placeholders before a request leaves
the process, put back in what the program returns.

    dspex.configure(lm=lm, redactors=[dspex.privacy.EMAIL, dspex.privacy.PHONE,
                                      dspex.privacy.CREDIT_CARD, dspex.privacy.IP_ADDRESS])

The LM sees ``<EMAIL_1>``; the prediction holds the address. The cache key, the LM
history, logs, events, traces and the run store see only placeholders. See
`dspex.privacy.redactors` for writing a redactor and `dspex.privacy.session` for the
scope of a placeholder.
"""

from dspex.privacy.redactors import (
    CREDIT_CARD,
    DEFAULT_REDACTORS,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    PHONE,
    US_SSN,
    PresidioRedactor,
    Redactor,
    RegexRedactor,
    luhn_valid,
    regex,
    spans_of,
)
from dspex.privacy.session import RedactionSession, current_session, reveal

__all__ = [
    "CREDIT_CARD",
    "DEFAULT_REDACTORS",
    "EMAIL",
    "IBAN",
    "IP_ADDRESS",
    "PHONE",
    "US_SSN",
    "PresidioRedactor",
    "RedactionSession",
    "Redactor",
    "RegexRedactor",
    "current_session",
    "luhn_valid",
    "regex",
    "reveal",
    "spans_of",
]
