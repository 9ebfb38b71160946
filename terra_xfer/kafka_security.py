"""Kafka client settings: the one merge of ``[kafka]`` into librdkafka's configuration
(:func:`client_config`), its security settings, and a check the cluster takes them.

``[kafka] security_protocol`` is PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. SASL defaults to
SCRAM-SHA-512 and needs ``sasl_username`` and the password in ``TERRA_XFER_KAFKA_SASL_PASSWORD``;
``ssl_ca_location`` names the CA bundle for SSL and SASL_SSL. Settings that contradict each other
(a SASL password with PLAINTEXT, a CA bundle without TLS) are refused rather than silently ignored:
a password that is configured but never sent is a misconfiguration someone should hear about.

The password leaves its :class:`~terra_xfer.config.Secret` only into the dict handed to librdkafka.

:func:`check_access` asks the cluster for metadata and turns librdkafka's refusals into one clear
sentence: :class:`KafkaAuthError` when the cluster refuses the credentials (or wants credentials
we do not send), :class:`KafkaUnreachableError` when no broker answers at all.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from terra_xfer.config import KafkaConfig
from terra_xfer.errors import ConfigError, PermanentError, TransientError
from terra_xfer.logs import Demote, QuietRepeats

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_MECHANISM = "SCRAM-SHA-512"
PASSWORD_ENV = "TERRA_XFER_KAFKA_SASL_PASSWORD"
# librdkafka's words when a broker drops the connection during the first requests, as a SASL or
# TLS listener does to a client speaking plain Kafka.
_DROPPED = ("connection closed by peer", "Disconnected while requesting ApiVersion")
log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("terra_xfer.librdkafka")
# Retried by librdkafka until the coordinator has loaded its state: on every broker start.
_librdkafka_log.addFilter(Demote("Coordinator load in progress", "COORDINATOR_LOAD_IN_PROGRESS"))
_librdkafka_log.addFilter(QuietRepeats())


class KafkaAuthError(PermanentError):
    """The Kafka cluster refused our credentials, or needs credentials the config does not send."""


class KafkaUnreachableError(TransientError):
    """No Kafka broker answered a metadata request in time."""


def client_config(kafka: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    """Common client settings (bootstrap, security) merged with ``overrides``."""
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "logger": _librdkafka_log,
    }
    conf.update(security_settings(kafka))  # the only place the SASL password is revealed
    conf.update(overrides)
    return conf


def security_settings(kafka: KafkaConfig) -> dict[str, Any]:
    """librdkafka's security settings for ``kafka``; raises ConfigError when they contradict."""
    protocol = kafka.security_protocol.strip().upper()
    if protocol not in PROTOCOLS:
        allowed = ", ".join(PROTOCOLS)
        raise ConfigError(
            f"[kafka] security_protocol must be one of {allowed}, not {kafka.security_protocol!r}"
        )
    conf: dict[str, Any] = {"security.protocol": protocol}
    if protocol.startswith("SASL_"):
        conf.update(_sasl(kafka, protocol))
    elif kafka.sasl_mechanism or kafka.sasl_username or kafka.sasl_password is not None:
        raise ConfigError(
            f"[kafka] SASL settings are set but security_protocol is {protocol}: set it to "
            "SASL_PLAINTEXT or SASL_SSL, or remove the SASL settings"
        )
    if kafka.ssl_ca_location is not None:
        if not protocol.endswith("SSL"):
            raise ConfigError(
                f"[kafka] ssl_ca_location is set but security_protocol is {protocol}: "
                "set it to SSL or SASL_SSL"
            )
        conf["ssl.ca.location"] = str(kafka.ssl_ca_location)
    return conf


def _sasl(kafka: KafkaConfig, protocol: str) -> dict[str, Any]:
    mechanism = (kafka.sasl_mechanism or DEFAULT_MECHANISM).strip().upper()
    if mechanism not in MECHANISMS:
        allowed = ", ".join(MECHANISMS)
        raise ConfigError(
            f"[kafka] sasl_mechanism must be one of {allowed}, not {kafka.sasl_mechanism!r}"
        )
    if not kafka.sasl_username:
        raise ConfigError(f"[kafka] sasl_username must be set when security_protocol is {protocol}")
    if kafka.sasl_password is None:
        raise ConfigError(f"security_protocol {protocol} needs the password in {PASSWORD_ENV}")
    return {
        "sasl.mechanism": mechanism,
        "sasl.username": kafka.sasl_username,
        "sasl.password": kafka.sasl_password.reveal(),
    }


def check_access(kafka: KafkaConfig, timeout_s: float = 10.0) -> int:
    """The number of brokers the cluster lists, asked with ``kafka``'s settings and credentials.

    Raises :class:`KafkaAuthError` as soon as the cluster refuses us, or
    :class:`KafkaUnreachableError` when nothing answered within ``timeout_s``; each says in one
    sentence what to check. librdkafka's own messages are only logged at debug level.
    """
    seen: list[tuple[int | None, str]] = []
    collector = _Collector(seen)
    _probe_log.addHandler(collector)
    try:
        admin = AdminClient(
            client_config(
                kafka, error_cb=lambda e: seen.append((e.code(), e.str())), logger=_probe_log
            )
        )
        deadline = time.monotonic() + timeout_s
        while True:
            wait = min(1.0, max(deadline - time.monotonic(), 0.1))
            try:
                brokers = admin.list_topics(timeout=wait).brokers
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError):
                    seen.append((err.code(), err.str()))
                brokers = {}
            if brokers:
                return len(brokers)
            admin.poll(0.2)  # serve the callbacks queued meanwhile: they tell why
            refused = refusal(kafka, seen)
            if isinstance(refused, KafkaAuthError) or time.monotonic() >= deadline:
                for code, text in seen:
                    log.debug("kafka access check: %s (%s)", text, code)
                raise refused
    finally:
        _probe_log.removeHandler(collector)


class BrokerUnreachable(KafkaUnreachableError):
    """For a command a person runs: no broker answered, said with what to run."""


def require_broker(kafka: KafkaConfig, timeout_s: float = 5.0) -> None:
    """:func:`check_access` for a command that needs the cluster now (``status``, ``lag`` …):
    within ``timeout_s``, one sentence naming the address and what to run when nothing answers,
    instead of the clients' own 10 to 30 s waits ending in a library exception."""
    try:
        check_access(kafka, timeout_s)
    except KafkaUnreachableError:
        raise BrokerUnreachable(
            f"cannot reach the Kafka broker at {kafka.bootstrap_servers} within {timeout_s:.0f} s."
            " Start one with `terra-xfer broker start` (or `make demo KEEP=1`), or point"
            " [kafka] bootstrap_servers (env TERRA_XFER_KAFKA_BOOTSTRAP_SERVERS) at yours."
        ) from None


class _Collector(logging.Handler):
    """Keeps librdkafka's log lines of one check (they say when a broker dropped us)."""

    def __init__(self, into: list[tuple[int | None, str]]) -> None:
        super().__init__(logging.DEBUG)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        self._into.append((None, record.getMessage()))


_probe_log = logging.getLogger("terra_xfer.kafka_security.probe")
_probe_log.propagate = False  # librdkafka's retries are noise; the check raises one clear error


def refusal(
    kafka: KafkaConfig, errors: list[tuple[int | None, str]]
) -> KafkaAuthError | KafkaUnreachableError:
    """The error for a cluster that did not answer, from librdkafka's (code or None, text) pairs."""
    where = kafka.bootstrap_servers
    codes = {code for code, _ in errors}
    if codes & {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}:
        mechanism = kafka.sasl_mechanism or DEFAULT_MECHANISM
        return KafkaAuthError(
            f"the Kafka cluster at {where} refused the credentials of user "
            f"{kafka.sasl_username!r} ({mechanism}): check [kafka] sasl_username and {PASSWORD_ENV}"
        )
    dropped = any(marker in text for _, text in errors for marker in _DROPPED)
    if dropped and not kafka.security_protocol.strip().upper().startswith("SASL_"):
        return KafkaAuthError(
            f"the Kafka cluster at {where} closed the connection before answering: it probably "
            "requires authentication (SASL) or TLS, and [kafka] security_protocol is "
            f"{kafka.security_protocol}"
        )
    return KafkaUnreachableError(
        f"no Kafka broker at {where} answered a metadata request: is the cluster up and "
        "[kafka] bootstrap_servers right?"
    )
