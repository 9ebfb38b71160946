"""SASL/SCRAM-SHA-512 for the embedded broker: its user, its listener, and a client's settings.

KRaft keeps SCRAM credentials in its metadata log, so the user is written there when the storage is
first formatted (``kafka-storage format --add-scram``); a data directory formatted without it does
not gain it by a restart. The same user is the broker's own identity on its SASL listener (the
JAAS line in ``server.properties``, which is therefore written owner-only). The controller listener
stays PLAINTEXT on 127.0.0.1: it carries no client traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from terra_xfer.config import Secret
from terra_xfer.errors import BrokerError

SCRAM_MECHANISM = "SCRAM-SHA-512"
SASL_LISTENER = "SASL_PLAINTEXT"
# Characters the storage tool's --add-scram syntax, JAAS quoting and .properties escaping all pass
# through unchanged; anything else is refused rather than escaped three different ways.
_UNSAFE = frozenset(" \t\n\r\"'\\,=[];")


@dataclass(frozen=True)
class ScramUser:
    """A SCRAM-SHA-512 user of the embedded broker: created at format time, used by the broker too."""

    name: str
    password: Secret

    def __post_init__(self) -> None:
        for what, value in (("user name", self.name), ("password", self.password.reveal())):
            if not value or any(c in _UNSAFE or not c.isprintable() for c in value):
                raise BrokerError(
                    f"the embedded broker's SCRAM {what} must be non-empty printable text without "
                    "spaces, quotes, backslashes or any of , = [ ] ;"
                )

    def add_scram_argument(self) -> str:
        """The storage tool's ``--add-scram`` value that creates this user."""
        return f"{SCRAM_MECHANISM}=[name={self.name},password={self.password.reveal()}]"

    def jaas(self) -> str:
        """The listener's JAAS line: the identity the broker itself logs in with."""
        return (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.name}" password="{self.password.reveal()}";'
        )


def sasl_listener(user: ScramUser, port: int, controller_port: int) -> dict[str, str]:
    """server.properties for a SASL_PLAINTEXT/SCRAM-SHA-512 client listener on ``port``."""
    name = SASL_LISTENER.lower()
    return {
        "listeners": f"{SASL_LISTENER}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"{SASL_LISTENER}://127.0.0.1:{port}",
        "inter.broker.listener.name": SASL_LISTENER,
        "listener.security.protocol.map": f"{SASL_LISTENER}:{SASL_LISTENER},CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        f"listener.name.{name}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": user.jaas(),
    }


def client_security(user: ScramUser) -> dict[str, Any]:
    """The ``KafkaConfig`` fields of a client logging in as ``user``."""
    return {
        "security_protocol": SASL_LISTENER,
        "sasl_mechanism": SCRAM_MECHANISM,
        "sasl_username": user.name,
        "sasl_password": user.password,
    }
