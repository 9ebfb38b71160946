"""Whether the configured Kafka broker answers, asked once before a command that needs it.

A command run while no broker is up (the usual case right after ``make demo``, which stops its
broker) would otherwise wait out its clients' own timeouts, 10 to 30 s, and end in a client
library's exception. Asked first, with a short deadline, it says in one line what is wrong and
what to run.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from terra_xfer.config import KafkaConfig
from terra_xfer.errors import TerraXferError
from terra_xfer.kafka_security import client_config

REACH_TIMEOUT_S = 5.0


class BrokerUnreachable(TerraXferError):
    """The configured broker did not answer a metadata request in time."""


def require_broker(kafka: KafkaConfig, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Return once the broker at ``[kafka] bootstrap_servers`` answers; raise
    :class:`BrokerUnreachable` naming the address and what to do when it does not."""
    # log_level 0: the connection failures are told once, in the error, not as log lines too.
    admin = AdminClient(client_config(kafka, log_level=0))
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerUnreachable(unreachable(kafka, exc, timeout_s)) from None


def unreachable(kafka: KafkaConfig, exc: KafkaException, timeout_s: float) -> str:
    """The one line told when the broker does not answer."""
    err = exc.args[0] if exc.args else None
    why = err.str() if isinstance(err, KafkaError) else str(exc)
    return (
        f"cannot reach the Kafka broker at {kafka.bootstrap_servers} within {timeout_s:.0f} s"
        f" ({why}). Start one with `terra-xfer broker start` (or `make demo KEEP=1`), or point"
        " [kafka] bootstrap_servers (env TERRA_XFER_KAFKA_BOOTSTRAP_SERVERS) at yours."
    )
