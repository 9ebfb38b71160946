"""Every record that changes a file's state lands on the partition of that file's key, so the one
state keeper that owns the file reads it (and a keeper can check it owns what it folds)."""

from __future__ import annotations

import pytest

from consumers.batcher import Batcher
from consumers.transfer.local import LocalTransfer
from producers.gantry.service import GantryProducer, log_source
from schemas.codec import Codec
from terra_xfer.config import Config, KafkaConfig
from terra_xfer.kafka import TxProducer
from terra_xfer.partitioner import partition_of
from terra_xfer.reading import read_to_end
from terra_xfer.stages import registry
from terra_xfer.topics import BATCHES_SUBMITTED, create_topics
from tests.pipeline import gantry_config, run_until, write_night

pytestmark = pytest.mark.broker


def test_the_broker_places_each_key_where_the_partitioner_says(
    kafka_config: KafkaConfig, make_topic: object
) -> None:
    topic = make_topic(partitions=6)  # type: ignore[operator]
    keys = [f"ua-mac/LemnaTec/MovingSensor/stereoTop/2017-08-24/{i}_left.bin" for i in range(300)]
    producer = TxProducer(kafka_config, f"{topic}-writer")
    with producer.transaction():
        for key in keys:
            producer.produce(topic, b"x", key)
    placed = {m.key().decode(): m.partition() for m in read_to_end(kafka_config, topic)}
    assert placed == {k: partition_of(k, 6) for k in keys}
    assert len(set(placed.values())) == 6


def test_a_batch_is_recorded_on_the_partition_that_owns_all_its_files(
    pipeline_config: Config,
) -> None:
    config = gantry_config(pipeline_config, max_files=40)
    create_topics(config)
    shipped = write_night(config, 400)
    backend = LocalTransfer(config.transfer.destination_root, config.transfer.state_dir)
    stages = [
        GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog")),
        Batcher(config, registry.spec("batcher"), backend),
    ]
    topic = config.topic(BATCHES_SUBMITTED)
    codec = Codec()

    def batched() -> set[str]:
        return {
            f["key"]
            for m in read_to_end(config.kafka, topic)
            for f in codec.decode(m.value() or b"")[1]["files"]
        }

    try:
        run_until(stages, lambda: len(batched()) >= len(set(shipped)), timeout_s=120)
    finally:
        for s in stages:
            s.close()  # type: ignore[attr-defined]
        backend.close()
    partitions = config.kafka.partitions
    records = [
        (m.partition(), codec.decode(m.value() or b"")[1]) for m in read_to_end(config.kafka, topic)
    ]
    assert {p for p, _ in records} == set(range(partitions))  # batches on every partition
    for partition, batch in records:
        owners = {partition_of(f["key"], partitions) for f in batch["files"]}
        assert owners == {partition}, (batch["batch_id"], partition, owners)
