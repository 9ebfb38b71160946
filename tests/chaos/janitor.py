"""The operator's part after a broker crash: abort the transactions it left hanging.

A single broker killed with SIGKILL can come back with a transaction whose commit markers it
skipped while its partitions had no leader yet ("Couldn't find leader endpoint ... likely deleted
already and hence can be skipped" in its log): the coordinator calls the transaction complete, the
partitions still hold it open, and read_committed consumers of those partitions (and the group whose
offsets it carried) wait behind it for ever. Kafka's own tool finds and aborts such transactions
(KIP-664); an operator runs it as README's runbook says, and so does the chaos run, for a while
after each broker restart, counting what it aborted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from terra_xfer.config import Config
from terra_xfer.kafka_tools import run_configured

log = logging.getLogger(__name__)
CHECK_EVERY_S = 15.0
WATCH_S = 180.0  # how long after a restart to look
OLDER_THAN_MIN = 1  # a transaction open this long is hung: ours time out after 10 s


@dataclass(frozen=True)
class Hanging:
    topic: str
    partition: int
    start_offset: int


def parse_hanging(output: str) -> list[Hanging]:
    """The rows of ``kafka-transactions find-hanging``'s table."""
    found = []
    for line in output.splitlines()[1:]:
        cells = line.split()
        if len(cells) >= 6 and cells[1].isdigit():
            found.append(Hanging(cells[0], int(cells[1]), int(cells[5])))
    return found


class Janitor:
    """Looks for hanging transactions every 15 s for 3 minutes after a broker restart."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.aborted: list[Hanging] = []
        self._until = 0.0
        self._next = 0.0

    def broker_restarted(self, now: float) -> None:
        self._until = now + WATCH_S
        self._next = now + CHECK_EVERY_S

    def tick(self, now: float) -> None:
        if now > self._until or now < self._next:
            return
        self._next = now + CHECK_EVERY_S
        for hanging in self.find():
            self.abort(hanging)

    def _tool(self, *args: str) -> str:
        version = self.config.broker.kafka_version
        done = run_configured(self.config.kafka, version, "transactions", args, 120, capture=True)
        return done.stdout

    def find(self) -> list[Hanging]:
        older = str(OLDER_THAN_MIN)
        return parse_hanging(
            self._tool("find-hanging", "--broker-id", "1", "--max-transaction-timeout", older)
        )

    def abort(self, hanging: Hanging) -> None:
        log.warning("aborting a hanging transaction on %s[%d] from offset %d",
                    hanging.topic, hanging.partition, hanging.start_offset)  # fmt: skip
        self._tool(
            "abort", "--topic", hanging.topic, "--partition", str(hanging.partition),
            "--start-offset", str(hanging.start_offset),
        )  # fmt: skip
        self.aborted.append(hanging)
