"""The Avro contract: one record per ``terra.xfer.<Name>.avsc`` file, every published version kept in
``published/``, and the single-object codec (``schemas.codec``). Producers and consumers share nothing
about data except this package."""
