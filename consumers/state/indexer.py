"""The indexer: keeps the status index (``[status] index_path``) current with files.state.

``terra-xfer status``, ``report`` and ``up``'s progress line answer from the status index, which
holds every file's last record, history included, for the site's lifetime (the stages' working
copies let settled files go). Kept by a stage of its own, the index is never more than a step
behind files.state, so a question asked on a site with ten million files reads only the last
seconds of the topic; without it, the first question after a long silence reads everything written
since (on Kubernetes, where no ``up`` runs, the whole topic: 488 s at a million files).

The index stores its files.state offsets with its rows (:class:`StatusIndex`): a restarted indexer
reads only what was written since, a lost index is rebuilt from the start of the topic, with
/readyz saying how far the rebuild is. ``status`` and ``report`` may write the same file beside it
(each catches up before it answers): the index skips a record below its stored offset in the same
transaction that writes, so two writers never undo each other.
"""

from __future__ import annotations

from consumers.state.view import StateFollower
from terra_xfer import metrics

# Records read per step, and how long a step reads at most: a step of a couple of seconds writes
# each file's states of those seconds once (0.22 ms of CPU a file against 0.25 with 0.5 s,
# bench.scale), and stopping never waits longer than that.
STEP_RECORDS = 20_000
STEP_WAIT_S = 2.0
GAUGES_EVERY_S = 10.0  # the files per state: a row per state to read (the index keeps them)


class Indexer:
    """The stage: catch up with files.state once (readiness follows), then follow it; it
    publishes the files per state (``terra_xfer_files_by_state``), as it holds every file."""

    def __init__(self, view: StateFollower) -> None:
        """``view``: a follower that keeps every record (no retention), given by the wiring."""
        if view.retention is not None or not view.index.keep_records:
            raise ValueError("the status index keeps every file's whole record")
        self.view = view
        self.caught_up = False
        self.gauges = metrics.Periodic(GAUGES_EVERY_S, self._publish_counts)

    def step(self) -> int:
        """One bounded read of files.state into the index; the states written."""
        if not self.caught_up:
            applied = self.view.catch_up()
            self.caught_up = True
        else:
            applied = self.view.refresh(STEP_RECORDS, STEP_WAIT_S)
        self.gauges.maybe()
        return applied

    def _publish_counts(self) -> None:
        metrics.observe_counts(self.view.index)

    def close(self) -> None:
        """The view is the wiring's to close."""
