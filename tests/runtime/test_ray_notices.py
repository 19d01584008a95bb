"""Ray's token-auth notice is dropped; every other record of that logger is kept."""

from __future__ import annotations

import logging

from dspex.runtime.ray_notices import TOKEN_SETUP_LOGGER, quiet_token_auth_notice


class Collect(logging.Handler):
    """Keeps the records that reach it (Ray's loggers do not propagate to the root, so
    pytest's caplog would not see them once Ray has configured its logging)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_only_the_token_enabled_notice_is_dropped() -> None:
    quiet_token_auth_notice()
    quiet_token_auth_notice()  # idempotent: one filter, not two
    logger = logging.getLogger(TOKEN_SETUP_LOGGER)
    assert len(logger.filters) == 1
    collect = Collect()
    logger.addHandler(collect)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        logger.warning(
            "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled "
            "to opt out."
        )
        logger.warning("Token authentication is disabled for this Ray cluster. Anyone with ...")
        logger.info("Generated new authentication token and saved to %s", "/x/auth_token")
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    assert [r.getMessage()[:40] for r in collect.records] == [
        "Token authentication is disabled for thi",
        "Generated new authentication token and s",
    ]
