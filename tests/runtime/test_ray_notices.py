"""Ray's token-auth notice is dropped; every other record of that logger is kept."""

from __future__ import annotations

import logging

import pytest

from dspex.ray_notices import TOKEN_SETUP_LOGGER, quiet_token_auth_notice


def test_only_the_token_enabled_notice_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    quiet_token_auth_notice()
    quiet_token_auth_notice()  # idempotent: one filter, not two
    logger = logging.getLogger(TOKEN_SETUP_LOGGER)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=TOKEN_SETUP_LOGGER):
        logger.warning(
            "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled "
            "to opt out."
        )
        logger.warning("Token authentication is disabled for this Ray cluster. Anyone with ...")
        logger.info("Generated new authentication token and saved to %s", "/x/auth_token")
    assert [r.getMessage()[:40] for r in caplog.records] == [
        "Token authentication is disabled for thi",
        "Generated new authentication token and s",
    ]
