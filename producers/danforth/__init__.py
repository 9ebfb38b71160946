"""The Danforth producer: LemnaTec database snapshots into files.arrived, metadata first."""
