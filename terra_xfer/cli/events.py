"""``terra-xfer events tail``: decode any topic to JSON lines, so a person can read what flows."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import click
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Message, TopicPartition

from schemas.codec import Codec, CodecError
from terra_xfer.cli import State
from terra_xfer.config import Config
from terra_xfer.kafka import check, make_consumer
from terra_xfer.reading import read_to_end
from terra_xfer.topics import CATALOGUE


@click.group()
def events() -> None:
    """Read what flows through the pipeline's topics, decoded from Avro."""


def jsonable(value: Any) -> Any:
    """Avro values as JSON: bytes shown as text with undecodable bytes escaped (\\xNN)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def render(msg: Message, codec: Codec) -> dict[str, Any]:
    """One message as a JSON-ready document; a bad event becomes a document with ``error``."""
    key = msg.key()
    ts_type, ts = msg.timestamp()
    doc: dict[str, Any] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp_ms": ts if ts_type else None,
        "key": key.decode("utf-8", "backslashreplace") if key is not None else None,
    }
    raw = msg.value()
    if raw is None:
        doc["type"], doc["value"] = "tombstone", None
        return doc
    try:
        doc["type"], value = codec.decode(raw)
        doc["value"] = jsonable(value)
    except CodecError as exc:
        doc["type"], doc["error"] = "undecodable", str(exc)
    return doc


def full_topic_name(state: State, topic: str) -> str:
    """Accept ``files.arrived`` as well as ``terra.files.arrived``."""
    if any(topic == s.name for s in CATALOGUE):
        return state.config.topic(topic)
    return topic


@events.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest retained event.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines only (for jq and scripts).")
@click.option("--max-messages", type=int, default=None, help="Exit after this many events.")
@click.option(
    "--idle-exit",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Exit after this long without a new event (default: follow for ever).",
)
@click.pass_obj
def tail(
    state: State,
    topic: str,
    from_beginning: bool,
    as_json: bool,
    max_messages: int | None,
    idle_exit: float | None,
) -> None:
    """Follow TOPIC and print each event decoded, like `tail -f` (read_committed: only committed
    transactions are shown, as every stage sees them). Joins no consumer group and commits nothing.

    \b
    Examples:
      terra-xfer events tail terra.files.arrived
      terra-xfer events tail files.state --from-beginning --json --idle-exit 2 | jq .value.state
    """
    name = full_topic_name(state, topic)
    consumer = make_consumer(state.with_broker().kafka, f"terra-xfer-tail-{uuid.uuid4().hex[:8]}")
    codec = Codec()
    try:
        metadata = consumer.list_topics(name, timeout=10)
        partitions = metadata.topics[name].partitions if name in metadata.topics else {}
        if not partitions or metadata.topics[name].error is not None:
            raise click.UsageError(
                f"topic {name} does not exist (terra-xfer topics list shows them)"
            )
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(name, p, start) for p in sorted(partitions)])
        _print_loop(consumer, codec, as_json, max_messages, idle_exit)
    finally:
        consumer.close()


def _print_loop(
    consumer: Any, codec: Codec, as_json: bool, max_messages: int | None, idle_exit: float | None
) -> None:
    printed = 0
    idle_since = time.monotonic()
    while max_messages is None or printed < max_messages:
        msg = consumer.poll(0.5)
        if msg is None or check(msg) is None:
            if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                return
            continue
        idle_since = time.monotonic()
        doc = render(msg, codec)
        if as_json:
            click.echo(json.dumps(doc, ensure_ascii=False))
        else:
            body = doc.get("value") if "error" not in doc else {"error": doc["error"]}
            click.echo(
                f"{doc['topic']}[{doc['partition']}]@{doc['offset']} {doc['type']} "
                f"key={doc['key']} {json.dumps(body, ensure_ascii=False)}"
            )
        printed += 1


def read_committed(config: Config, topic: str, timeout_s: float = 60.0) -> list[tuple[str, Any]]:
    """Every committed event of a catalogue topic up to its end now, decoded (for reports)."""
    codec = Codec()
    out: list[tuple[str, Any]] = []
    for msg in read_to_end(config.kafka, config.topic(topic), timeout_s):
        try:
            out.append(codec.decode(msg.value() or b""))
        except CodecError:
            continue
    return out
