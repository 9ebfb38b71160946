"""Thin wrappers over confluent-kafka: one config merge order, latched delivery errors, transactions.

Config is merged in one fixed order: library defaults < terra-xfer's safe defaults < the stage's own
needs < explicit overrides. No wrapper makes a network call in ``__init__``.

The commit order every stage follows (side effect → output events → consumed offsets) is written
and enforced once, in :mod:`terra_xfer.stages.commit`, on top of :class:`TxProducer`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from terra_xfer.config import KafkaConfig
from terra_xfer.errors import PermanentError, TerraXferError, TransientError
from terra_xfer.kafka_security import client_config as client_config  # the one merge, re-exported

log = logging.getLogger(__name__)

# librdkafka's default partitioner (CRC32) differs from the Java client's; murmur2 matches Kafka's
# console tools, Kafka Streams and Strimzi, so keys land where every other client expects them.
PARTITIONER = "murmur2_random"
TRANSACTION_TIMEOUT_MS = 10_000
# librdkafka's transactional calls wait forever by default; a coordinator lost in a broker restart
# would then hang the stage. Bounded, they fail and the transaction is aborted and retried.
# send_offsets_to_transaction can still block past its timeout when the group coordinator went away
# (librdkafka issue 5456); the step watchdog (terra_xfer.stages.stall_guard) restarts such a process.
TXN_CALL_TIMEOUT_S = 30.0
COMMIT_RETRY_S = 60.0  # how long a commit that fails with retriable errors is asked again


class KafkaDeliveryError(TransientError):
    """A produced event was not acknowledged by the broker."""


class CommitOutcomeUnknown(PermanentError):
    """A transaction's commit kept failing with retriable errors: it may or may not have been
    committed. Permanent for this producer, so the stage process ends and its restart (a new
    producer with the same transactional id) settles the transaction and reads what is true."""


def instance_id(kafka: KafkaConfig) -> str:
    """This replica's stable name: ``[kafka] instance_id`` (the pod name on Kubernetes), else the
    host name."""
    return kafka.instance_id or socket.gethostname()


class TxProducer:
    """A transactional, idempotent producer with the first delivery error latched.

    ``transactional_id`` must be stable for one logical instance of a stage: when the instance
    restarts, ``init_transactions`` fences its previous incarnation and aborts whatever it left open.
    """

    def __init__(
        self, kafka: KafkaConfig, transactional_id: str, overrides: Mapping[str, Any] | None = None
    ) -> None:
        conf = client_config(
            kafka,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": PARTITIONER,
                "compression.type": "lz4",
                "linger.ms": 5,
                "batch.size": 1_000_000,
                "message.max.bytes": 8 * 1024 * 1024,
                "transactional.id": transactional_id,
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            },
        )
        conf.update(overrides or {})
        self.transactional_id = transactional_id
        self._producer = Producer(conf)
        self._initialised = False
        self._error: KafkaError | None = None
        # Delivery reports of an aborted transaction arrive late (purged messages); a report only
        # counts for the transaction that was open when its message was produced.
        self._generation = 0
        self._callbacks: dict[int, Any] = {}

    def _reporter(self) -> Any:
        generation = self._generation
        callback = self._callbacks.get(generation)
        if callback is None:

            def callback(err: KafkaError | None, _msg: Message) -> None:
                if err is not None and self._error is None and generation == self._generation:
                    self._error = err

            self._callbacks = {generation: callback}
        return callback

    def _raise_latched(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise KafkaDeliveryError(f"delivery failed: {err.str()}")

    def init(self, timeout_s: float = 5.0) -> None:
        """Register the transactional id (fencing older incarnations); idempotent.

        A short wait: a cluster that does not answer in time raises TransientError, and the next
        call resumes where this one stopped, so a stage told to stop meanwhile stops promptly.
        """
        if not self._initialised:
            try:
                self._producer.init_transactions(timeout_s)
            except KafkaException as exc:
                raise _wrap(exc, "init_transactions") from exc
            self._initialised = True

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        partition: int | None = None,
        on_delivery: Callable[[Message], None] | None = None,
    ) -> None:
        """Queue one event; ``on_delivery`` gets the written message (with its offset) once acked."""
        self._raise_latched()
        report = self._reporter()
        if on_delivery is not None:
            inner, generation = report, self._generation

            def report(err: KafkaError | None, msg: Message) -> None:
                inner(err, msg)
                # A message acknowledged before its transaction was aborted reports success later,
                # while the next transaction runs: it was never committed, so it is not told.
                if err is None and generation == self._generation:
                    on_delivery(msg)

        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": report}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.1)  # local queue full: serve delivery reports, then retry

    def produce_all(self, topic: str, events: Iterable[tuple[str | bytes | None, bytes]]) -> None:
        """Queue (key, value) events on ``topic`` inside the open transaction, without reports.

        The bulk path of a producer emitting many events per transaction: no Python callback per
        message. A message that cannot be delivered still fails the transaction, since
        ``commit_transaction`` flushes and refuses to commit past a failed delivery.
        """
        self._raise_latched()
        produce = self._producer.produce
        for key, value in events:
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    self._producer.poll(0.1)  # local queue full: let librdkafka send, then retry

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Begin; commit when the block succeeds, abort (and re-raise) when it does not."""
        self.init()
        self._generation += 1
        self._error = None
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise _wrap(exc, "begin_transaction") from exc
        try:
            yield
            self._producer.flush()
            self._raise_latched()
            self._commit()
        except CommitOutcomeUnknown:
            raise  # aborting now is refused; only a new producer (fencing this one) resolves it
        except KafkaException as exc:
            self._abort()
            raise _wrap(exc, "commit_transaction") from exc
        except BaseException:
            self._abort()
            raise

    def _commit(self) -> None:
        """``commit_transaction``, called again while it fails with a retriable error.

        librdkafka's contract: a commit that timed out may still complete on the broker, and only
        calling it again tells which way it went; aborting instead leaves the outcome unknown
        (the states it wrote may be committed while the caller believes them aborted). When the
        retriable errors last ``COMMIT_RETRY_S``, :class:`CommitOutcomeUnknown` is raised.
        """
        deadline = time.monotonic() + COMMIT_RETRY_S
        while True:
            try:
                self._producer.commit_transaction(TXN_CALL_TIMEOUT_S)
                return
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                retriable = (
                    isinstance(err, KafkaError)
                    and err.retriable()
                    and not err.fatal()
                    and not err.txn_requires_abort()
                )
                if not retriable:
                    raise
                if time.monotonic() >= deadline:
                    raise CommitOutcomeUnknown(
                        f"commit_transaction of {self.transactional_id} still failing after"
                        f" {COMMIT_RETRY_S:.0f} s: {exc}; whether it committed is unknown"
                    ) from exc
                log.warning(
                    "commit_transaction of %s: %s; asking again", self.transactional_id, exc
                )

    def send_offsets(self, consumer: Consumer, offsets: Sequence[TopicPartition]) -> None:
        """Add consumed ``offsets`` (next offsets to read) to the open transaction."""
        if offsets:
            try:
                self._producer.send_offsets_to_transaction(
                    list(offsets), consumer.consumer_group_metadata(), TXN_CALL_TIMEOUT_S
                )
            except KafkaException as exc:
                raise _wrap(exc, "send_offsets_to_transaction") from exc

    def _abort(self) -> None:
        self._generation += 1
        self._error = None
        try:
            self._producer.abort_transaction(TXN_CALL_TIMEOUT_S)
        except KafkaException as exc:
            log.error("abort_transaction failed for %s: %s", self.transactional_id, exc)

    def poll(self, timeout_s: float = 0) -> None:
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Send everything queued now (inside a transaction: written, not yet committed)."""
        if self._producer.flush(timeout_s):
            raise KafkaDeliveryError(f"flush timed out after {timeout_s:.0f} s")
        self._raise_latched()

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued; a producer already failed (fenced, fatal) has nothing to send."""
        try:
            self._producer.flush(timeout_s)
        except KafkaException as exc:
            log.warning("closing producer %s: %s", self.transactional_id, exc)


def _wrap(exc: KafkaException, what: str) -> Exception:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError) and err.code() == KafkaError._PREV_IN_PROGRESS:
        return TransientError(f"{what}: still in progress from an earlier call")
    if isinstance(err, KafkaError) and err.txn_requires_abort() and not err.fatal():
        return TransientError(f"{what}: {err.str()} (transaction aborted)")
    if isinstance(err, KafkaError) and (err.fatal() or not err.retriable()):
        return PermanentError(f"{what}: {err.str()}")
    return TransientError(f"{what}: {exc}")


def make_consumer(
    kafka: KafkaConfig,
    group_id: str,
    overrides: Mapping[str, Any] | None = None,
) -> Consumer:
    """A read_committed consumer whose offsets are only ever committed explicitly."""
    conf = client_config(
        kafka,
        **{
            "group.id": group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 300_000,
            # Prefetch at most 8 MB (thousands of events, many batches ahead) per consumer, not
            # librdkafka's 64 MB: a process runs several consumers, and behind a backlog every
            # one of them would otherwise fill its queue.
            "queued.max.messages.kbytes": 8192,
        },
    )
    conf.update(overrides or {})
    return Consumer(conf)


def member_consumer(
    kafka: KafkaConfig, group_id: str, overrides: Mapping[str, Any] | None = None
) -> Consumer:
    """A stage's consumer: ``make_consumer`` as a static member of ``group_id``.

    Its ``group.instance.id`` is the one this instance's transactional producer is named after
    (``<group>-<instance>``), so an instance restarted after kill -9 takes its own partitions
    straight back instead of waiting out the session of its previous incarnation, and a zombie of
    that incarnation is fenced by the coordinator. Only for a stage's own group: two processes on
    one host with the same group would fence each other (as their producers already do).
    """
    static = {"group.instance.id": f"{group_id}-{instance_id(kafka)}"}
    return make_consumer(kafka, group_id, {**static, **(overrides or {})})


def consume_ready(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Up to ``max_messages``, returning as soon as the first one is there.

    ``Consumer.consume(n, t)`` returns only when n messages have arrived or t has passed, so a
    stage fed a trickle would wait the whole t at every step. This waits up to ``timeout_s`` for
    one message, then takes what is already fetched: batches stay small when input is sparse
    and grow by themselves under load (whatever arrived during the last commit).
    """
    first = consumer.consume(1, timeout_s)
    if not first or max_messages <= 1:
        return first
    return first + consumer.consume(max_messages - 1, 0)


def check(msg: Message) -> Message | None:
    """The message when it carries data; None for partition EOF; raise for a real error."""
    err = msg.error()
    if err is None:
        return msg
    if err.code() == KafkaError._PARTITION_EOF:
        return None
    if err.fatal() or not err.retriable():
        raise PermanentError(f"consumer error on {msg.topic()}[{msg.partition()}]: {err.str()}")
    raise TransientError(f"consumer error on {msg.topic()}[{msg.partition()}]: {err.str()}")


def next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """Per partition, the offset after the last message: what a commit must record."""
    latest: dict[tuple[str, int], int] = {}
    for msg in messages:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        latest[(topic, partition)] = max(latest.get((topic, partition), -1), offset + 1)
    return [TopicPartition(t, p, o) for (t, p), o in sorted(latest.items())]


# librdkafka's codes for a cluster that is away for now (restarting, moving a coordinator, not
# started yet): not all of them are flagged retriable, yet waiting is all they call for.
BROKER_AWAY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._WAIT_COORD,
    }
)


def broker_away(exc: BaseException) -> bool:
    """True when ``exc`` is a Kafka error that waiting for the cluster can cure."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return (
        isinstance(err, KafkaError)
        and not err.fatal()
        and (err.retriable() or err.code() in BROKER_AWAY)
    )


class RewindError(TerraXferError):
    """The consumer could not be put back at its committed offsets.

    Deliberately not transient: a stage that went on without rewinding would skip the messages of
    the aborted transaction. The stage stops instead, and its restart reads from the committed
    offsets.
    """


def rewind_to_committed(
    consumer: Consumer, timeout_s: float = 10.0, give_up_after_s: float = 120.0
) -> None:
    """Seek every assigned partition back to its committed offset (after an aborted transaction).

    The broker may be restarting or moving its group coordinator right then, so retriable errors
    are retried with backoff for ``give_up_after_s``; after that, or on any other error, raises
    :class:`RewindError`.
    """
    deadline = time.monotonic() + give_up_after_s
    delay = 0.1
    while True:
        try:
            _rewind_once(consumer, timeout_s)
            return
        except KafkaException as exc:
            if not broker_away(exc) or time.monotonic() + delay > deadline:
                raise RewindError(f"cannot rewind to the committed offsets: {exc}") from exc
            log.warning("rewinding to the committed offsets failed, retrying: %s", exc)
            time.sleep(delay)  # backoff while the coordinator comes back
            delay = min(delay * 2, 5.0)


def _rewind_once(consumer: Consumer, timeout_s: float) -> None:
    assigned = consumer.assignment()
    if not assigned:
        return
    for tp in consumer.committed(assigned, timeout=timeout_s):
        if tp.offset == OFFSET_INVALID:
            # Nothing committed yet: start of the partition, as auto.offset.reset=earliest does.
            low, _high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            tp.offset = low
        consumer.seek(tp)


def where(msg: Message) -> str:
    """``topic[partition]@offset``: how every log line names a message."""
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
