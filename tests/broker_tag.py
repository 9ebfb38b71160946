"""The tag on the command line of every broker the tests start (``-Dterra.xfer.tag=...``).

``make test`` gives each run its own (``TERRA_XFER_TEST_TAG``) and, at the end, stops the brokers
left with it and no others: a second checkout's test run on the same machine is not touched.
"""

from __future__ import annotations

import os

TEST_BROKER_TAG = os.environ.get("TERRA_XFER_TEST_TAG", "terra-xfer-test-broker")
