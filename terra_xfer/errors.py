"""The error tree every stage raises from.

Transient errors are worth retrying (a broker or remote service that may come back); permanent ones are
not (bad input, a refused request). Third-party exceptions are wrapped into these at the boundary of the
module that talks to the third party, so stages decide retry vs dead-letter from the type alone.
"""

import re


class TerraXferError(Exception):
    """Root of every error terra-xfer raises on purpose."""


class TransientError(TerraXferError):
    """The operation may succeed if retried later (network, 5xx, broker unavailable)."""


class PermanentError(TerraXferError):
    """Retrying will not help; the input or the request must change."""


class ConfigError(PermanentError):
    """The configuration is invalid; the message names the key and the problem in one sentence."""


class BrokerError(TerraXferError):
    """The embedded broker could not be resolved, started, stopped or reached."""


def failure_cause(exc: BaseException) -> str:
    """What makes two failures the same cause, for logging a cause once: the error's type and its
    message without its numbers (attempt counts, ports, durations)."""
    return f"{type(exc).__name__}: {re.sub(r'[0-9]+', '#', str(exc))}"
