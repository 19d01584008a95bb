"""Ray's start-up notices that say nothing to a dspex user.

Ray 2.60 logs, on every ``ray.init`` that starts a local instance (and on every
connect where it finds a token), a WARNING that token authentication is on,
with how to switch it off. dspex relies on that default (the cluster tools make
sure a token exists), so the line is noise on every ``dspex demo`` and
``dspex.init()``, and teaches users to switch a security feature off.

`quiet_token_auth_notice` drops exactly that record from the Ray logger that
emits it; every other record of that logger, including the warning that token
authentication is *disabled*, still gets through. Nothing here imports Ray.
"""

from __future__ import annotations

import logging

#: the logger Ray's token set-up writes to (``logging.getLogger(__name__)`` in that module)
TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
#: how the notice starts; its "disabled" counterpart starts differently and is kept
TOKEN_ENABLED_NOTICE = "Token authentication is enabled for this Ray cluster."


class _DropTokenEnabledNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TOKEN_ENABLED_NOTICE)


def quiet_token_auth_notice() -> None:
    """Drop Ray's "token authentication is enabled" notice; idempotent.

    Call before ``ray.init``. The filter sits on the logger itself, which
    ``logging.getLogger`` creates if Ray has not been imported yet, so it holds
    once Ray's module asks for the same logger.
    """
    logger = logging.getLogger(TOKEN_SETUP_LOGGER)
    if not any(isinstance(f, _DropTokenEnabledNotice) for f in logger.filters):
        logger.addFilter(_DropTokenEnabledNotice())
