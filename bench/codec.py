"""§4: our Avro codec against bare fastavro, encoding and decoding the same records.

Ours (``schemas.codec.Codec``) writes the single-object header and encodes with compiled writers,
and decodes by resolving the writer's schema from the fingerprint; bare fastavro
(``schemaless_writer``/``schemaless_reader`` with the parsed schema at hand) is the limit. The
records are the sample values of tests/samples.py; each rate is the best of three timed rounds.

    PYTHONPATH=. python -m bench.codec
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import fastavro

from bench.figures import Figure, Section
from schemas.codec import HEADER_LEN, Codec, current_schemas
from tests.samples import sample

RECORDS = ("FileArrived", "BatchSubmitted", "FileState")


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls/s of ``fn``: the best of three rounds of about ``seconds`` / 3 each."""
    n = 1
    while True:  # grow the round until it takes a measurable time
        began = time.perf_counter()
        for _ in range(n):
            fn()
        took = time.perf_counter() - began
        if took > 0.02:
            break
        n *= 4
    per_round = max(1, int(n * (seconds / 3) / took))
    best = 0.0
    for _ in range(3):
        began = time.perf_counter()
        for _ in range(per_round):
            fn()
        best = max(best, per_round / (time.perf_counter() - began))
    return best


def record(name: str) -> dict[str, Any]:
    """The sample value of ``name``; a batch of 500 files, as the batcher submits."""
    value = sample(name)
    if name == "BatchSubmitted":
        one = value["files"][0]
        value["files"] = [one | {"key": f"{one['key']}{i}"} for i in range(500)]
    return value


def figures_of(name: str, seconds: float) -> tuple[list[Figure], dict[str, Any]]:
    codec = Codec()
    parsed = current_schemas()[name].parsed
    value = record(name)
    encoded = codec.encode(name, value)
    body = encoded[HEADER_LEN:]

    def bare_encode() -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, value)
        return buf.getvalue()

    assert bare_encode() == body, f"{name}: our body differs from fastavro's"
    ours_enc = rate(lambda: codec.encode(name, value), seconds)
    bare_enc = rate(bare_encode, seconds)
    ours_dec = rate(lambda: codec.decode(encoded), seconds)
    bare_dec = rate(lambda: fastavro.schemaless_reader(io.BytesIO(body), parsed, None), seconds)
    figures = [
        Figure(f"{name} encode", ours_enc, "records/s", "bare fastavro", bare_enc),
        Figure(f"{name} decode", ours_dec, "records/s", "bare fastavro", bare_dec),
    ]
    return figures, {f"{name}_bytes": len(encoded)}


def section(seconds: float = 1.5) -> Section:
    s = Section("4", "Codec: Avro single-object encoding against bare fastavro, same records")
    for name in RECORDS:
        figures, details = figures_of(name, seconds)
        s.figures += figures
        s.details |= details
    s.details["fastavro"] = fastavro.__version__
    return s


if __name__ == "__main__":
    print(json.dumps(section().to_dict(), indent=2))
