"""Kafka client security settings, the access check's verdicts, and the SASL broker's config.

No broker here: ``tests/integration/test_sasl.py`` runs them against a real SASL listener.
"""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from terra_xfer.broker import EmbeddedBroker, free_port
from terra_xfer.broker_scram import ScramUser
from terra_xfer.config import KafkaConfig, Secret, load
from terra_xfer.errors import BrokerError, ConfigError
from terra_xfer.kafka import client_config
from terra_xfer.kafka_security import (
    KafkaAuthError,
    KafkaUnreachableError,
    check_access,
    refusal,
    security_settings,
)

PASSWORD = "Sasl-Unit-9x+y/z"
SASL_ENV = {
    "TERRA_XFER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "TERRA_XFER_KAFKA_SASL_USERNAME": "terra",
    "TERRA_XFER_KAFKA_SASL_PASSWORD": PASSWORD,
    "TERRA_XFER_KAFKA_SSL_CA_LOCATION": "/etc/terra/ca.pem",
}


def test_plaintext_is_the_default_and_sends_no_credentials() -> None:
    conf = client_config(KafkaConfig())
    assert conf["security.protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("sasl.", "ssl.")) for k in conf)


def test_sasl_from_the_environment_defaults_to_scram_sha_512() -> None:
    kafka = load(env=SASL_ENV).kafka
    conf = client_config(kafka, **{"group.id": "g"})
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "terra" and conf["sasl.password"] == PASSWORD
    assert conf["ssl.ca.location"] == "/etc/terra/ca.pem" and conf["group.id"] == "g"
    assert PASSWORD not in repr(kafka) and PASSWORD not in str(load(env=SASL_ENV))


def test_the_password_is_refused_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(f'[kafka]\nsasl_password = "{PASSWORD}"\n')
    with pytest.raises(ConfigError, match="TERRA_XFER_KAFKA_SASL_PASSWORD") as info:
        load(path, env={})
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"security_protocol": "SASL_PLAIN"}, "security_protocol must be one of"),
        ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism must be one of"),
        ({"sasl_username": None}, "sasl_username must be set"),
        ({"sasl_password": None}, "TERRA_XFER_KAFKA_SASL_PASSWORD"),
        ({"security_protocol": "PLAINTEXT"}, "SASL settings are set but security_protocol"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "ssl_ca_location": Path("/ca.pem")},
            "ssl_ca_location is set but security_protocol is SASL_PLAINTEXT",
        ),
    ],
)
def test_contradicting_settings_are_config_errors(changes: dict[str, object], message: str) -> None:
    kafka = dataclasses.replace(load(env=SASL_ENV).kafka, **changes)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message) as info:
        security_settings(kafka)
    assert PASSWORD not in str(info.value)


def test_tls_without_sasl_passes_the_ca_bundle() -> None:
    conf = security_settings(KafkaConfig(security_protocol="ssl", ssl_ca_location=Path("/ca")))
    assert conf == {"security.protocol": "SSL", "ssl.ca.location": "/ca"}


SASL = KafkaConfig(
    bootstrap_servers="k:9093",
    security_protocol="SASL_PLAINTEXT",
    sasl_username="terra",
    sasl_password=Secret(PASSWORD),
)


@pytest.mark.parametrize(
    ("kafka", "errors", "kind", "message"),
    [
        (
            SASL,
            [(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials")],
            KafkaAuthError,
            "refused the credentials of user 'terra' (SCRAM-SHA-512)",
        ),
        (
            KafkaConfig(bootstrap_servers="k:9093"),
            [(None, "Disconnected: connection closed by peer: receive 0 after POLLIN")],
            KafkaAuthError,
            "requires authentication (SASL) or TLS",
        ),
        (
            KafkaConfig(bootstrap_servers="k:9093"),
            [(KafkaError._TRANSPORT, "Connect to ipv4#10.0.0.1:9093 failed: Connection refused")],
            KafkaUnreachableError,
            "no Kafka broker at k:9093 answered",
        ),
        (SASL, [], KafkaUnreachableError, "no Kafka broker at k:9093 answered"),
    ],
)
def test_refusals_name_the_cause(
    kafka: KafkaConfig, errors: list[tuple[int | None, str]], kind: type, message: str
) -> None:
    error = refusal(kafka, errors)
    assert isinstance(error, kind) and message in str(error)
    assert PASSWORD not in str(error)


def test_nothing_listening_is_unreachable_not_an_auth_error() -> None:
    with pytest.raises(KafkaUnreachableError, match="answered a metadata request"):
        check_access(KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}"), timeout_s=1.0)


# --- the embedded broker's SASL listener, as configured (started in test_sasl.py) ---------------


def test_a_scram_broker_listens_only_with_sasl(tmp_path: Path) -> None:
    node = EmbeddedBroker(
        9500,
        tmp_path,
        "4.4.0",
        controller_port=9501,
        scram_user=ScramUser("admin", Secret(PASSWORD)),
    )
    props = node.properties()
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9500,CONTROLLER://127.0.0.1:9501"
    assert "PLAINTEXT://" not in props["advertised.listeners"].replace("SASL_PLAINTEXT://", "")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    jaas = props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    assert f'username="admin" password="{PASSWORD}";' in jaas
    kafka = node.kafka_config(topic_prefix="p.")
    assert kafka.security_protocol == "SASL_PLAINTEXT" and kafka.sasl_username == "admin"
    assert kafka.sasl_password == Secret(PASSWORD) and kafka.topic_prefix == "p."
    config_file = node._write_config()
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert PASSWORD not in repr(ScramUser("admin", Secret(PASSWORD)))


def test_a_plain_broker_is_unchanged(tmp_path: Path) -> None:
    node = EmbeddedBroker(9500, tmp_path, "4.4.0", controller_port=9501)
    assert node.properties()["listeners"].startswith("PLAINTEXT://127.0.0.1:9500,")
    assert node.kafka_config() == KafkaConfig(bootstrap_servers="127.0.0.1:9500")


@pytest.mark.parametrize("password", ["", "with space", 'quo"te', "comma,", "br]acket", "eq=ual"])
def test_scram_passwords_the_broker_cannot_quote_are_refused(password: str) -> None:
    with pytest.raises(BrokerError, match="SCRAM password must be"):
        ScramUser("admin", Secret(password))
