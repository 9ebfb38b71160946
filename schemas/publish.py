"""Publish the current schemas: copy every one whose fingerprint is new into ``published/``.

Run ``python -m schemas.publish`` after changing an ``.avsc`` file. Published files are never edited or
removed: readers need every version ever written to decode old events. A test fails while a current
schema is unpublished or a published file no longer matches its fingerprint.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas.codec import current_schemas

PUBLISHED = Path(__file__).with_name("published")


def publish() -> list[Path]:
    """Write the unpublished current schemas; return the files written."""
    written = []
    for short, version in sorted(current_schemas().items()):
        target = PUBLISHED / f"{short}.{version.fingerprint:016x}.avsc"
        if not target.exists():
            target.write_text(json.dumps(version.schema, indent=2) + "\n", encoding="utf-8")
            written.append(target)
    return written


if __name__ == "__main__":
    for path in publish():
        print(f"published {path.name}")
