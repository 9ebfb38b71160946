"""``python -m terra_xfer`` is the ``terra-xfer`` command."""

from terra_xfer.cli import main

main()
