"""The Java console tools' client properties, made from the terra-xfer Kafka config."""

from __future__ import annotations

from pathlib import Path

import pytest

from terra_xfer.config import KafkaConfig, Secret
from terra_xfer.errors import ConfigError
from terra_xfer.kafka_tools import java_properties


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_plaintext_needs_no_properties() -> None:
    assert java_properties(KafkaConfig()) is None


def test_scram_over_tls_with_a_pem_ca() -> None:
    kafka = KafkaConfig(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="terra",
        sasl_password=Secret("s3cret"),
        ssl_ca_location=Path("/etc/kafka/ca.pem"),
    )
    text = java_properties(kafka)
    assert text is not None
    assert _props(text) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="terra" password="s3cret";',
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/etc/kafka/ca.pem",
    }


def test_quotes_and_backslashes_survive_both_parsers() -> None:
    kafka = KafkaConfig(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=Secret('a"b\\c'),
    )
    text = java_properties(kafka)
    assert text is not None
    # java.util.Properties halves the backslashes; the JAAS parser then unquotes \" and \\.
    assert 'password="a\\\\"b\\\\\\\\c";' in text
    assert "PlainLoginModule" in text


def test_contradictory_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="security_protocol"):
        java_properties(KafkaConfig(security_protocol="PLAINTEXT", sasl_username="u"))
