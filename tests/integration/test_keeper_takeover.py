"""A keeper given a partition folds only once its previous owner's transactions there have ended.

A catch-up reads files.state up to the last stable offset. While the previous owner (frozen,
dead, or with its commit markers not yet written) still has a transaction open on the partition,
its states are not readable yet: a keeper that folded then would build on a copy without them
and overwrite them. :meth:`KeeperCopy.settle` waits for such a transaction to end and says which
partition holds it when it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumers.state.keeper_store import KeeperCopy
from schemas.codec import Codec
from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.kafka import client_config
from terra_xfer.partitioner import partition_of
from terra_xfer.topics import FILES_STATE, create_topics
from tests.samples import sample

pytestmark = pytest.mark.broker


def previous_owner(config: Config, name: str) -> Producer:
    """A transactional writer of files.state, as the keeper that held a partition before."""
    producer = Producer(client_config(config.kafka, **{"transactional.id": name}))
    producer.init_transactions(30)
    return producer


def test_a_takeover_waits_for_the_previous_owners_open_transaction(
    pipeline_config: Config, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    config = pipeline_config
    create_topics(config)
    state = sample("FileState") | {"state": "TRANSFERRED"}
    key = state["key"]
    p = partition_of(key, config.kafka.partitions)
    topic = config.topic(FILES_STATE)
    owner = previous_owner(config, unique("keeper-before"))
    owner.begin_transaction()
    owner.produce(topic, Codec().encode("FileState", state), key.encode(), partition=p)
    owner.flush(30)
    copy = KeeperCopy(config, tmp_path / "keeper.sqlite")
    try:
        others = set(range(config.kafka.partitions)) - {p}
        assert copy.open_transactions(others) == {}
        ((stable, end),) = copy.open_transactions({p}).values()
        assert stable < end
        with pytest.raises(TransientError, match=rf"\[{p}\] holds a transaction still open"):
            copy.settle({p}, timeout_s=0.2)
        copy.catch_up()
        assert copy.store.get(key) is None  # what folding now would have started from

        owner.commit_transaction(30)
        copy.settle({p})
        copy.catch_up()
        assert copy.store.get(key) == state
        assert copy.open_transactions(range(config.kafka.partitions)) == {}
    finally:
        copy.close()
