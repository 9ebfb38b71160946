"""Lint the Dockerfile (no Docker engine runs here): the rules the image promises to keep."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_multi_stage_slim_base_and_pinned_python() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) == 2, "a builder stage and a runtime stage"
    assert all(f.split()[0] == "python:3.11-slim" for f in froms)


def runtime_stage() -> list[tuple[str, str]]:
    steps = instructions()
    return steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]


def test_runtime_runs_as_a_non_root_user_with_the_cli_entrypoint() -> None:
    runtime = runtime_stage()
    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    entry = [json.loads(args) for word, args in runtime if word == "ENTRYPOINT"]
    assert entry == [["terra-xfer"]]


def test_the_image_installs_the_built_wheel_not_the_source_tree() -> None:
    runtime_runs = " ".join(args for word, args in runtime_stage() if word == "RUN")
    assert "pip install --no-index" in runtime_runs and "terra-xfer" in shlex.split(runtime_runs)
    copied = {args.split()[0] for word, args in instructions() if word == "COPY"}
    for package in ("terra_xfer", "producers", "consumers", "schemas"):
        assert package in copied, f"{package} is not in the wheel's build context"


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert any(p.strip("/") in (".venv", ".venv/") for p in ignored)
