"""terra-xfer: move instrument files from an acquisition cache to an HPC site, and never lose one.

This package holds the shared runtime: configuration, the embedded broker, the topic catalogue,
Kafka client wrappers, the service loop, logging and the command line.
"""

__version__ = "0.1.0"
