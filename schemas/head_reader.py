"""Avro binary readers of a record's leading fields only: the head of an event, without its tail.

A view of files.state that keeps columns (state, version, size, times) needs none of a FileState's
history, yet a full decode spends most of its time there. Avro has no field offsets, but the
fields come in schema order: a reader compiled for the fields before the first one it does not
need reads those and stops. It reads exactly what fastavro reads for them (the tests compare
both on generated records). Supported head fields: null, boolean, int, long, string, bytes, enum
and unions of those; a schema whose head holds anything else gets no head reader.

A skipper (:func:`compile_skipper`) finds where a value ends by reading only its lengths, so that
an array can be kept as its items' bytes (:func:`array_items`, used by
:meth:`schemas.codec.Codec.decode_keeping`) without being decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from schemas.writer import UnsupportedSchema

HeadReader = Callable[[bytes, int], Any]  # the fields read (and, positioned, where it stopped)
Skipper = Callable[[bytes, int], int]
_SCALARS = ("null", "boolean", "int", "long", "string", "bytes")


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """The zigzag varint at ``pos`` and the position after it."""
    byte = data[pos]
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def compile_head_reader(
    schema: Mapping[str, Any], stop_at: str, positioned: bool = False
) -> HeadReader:
    """A function reading ``schema``'s fields before ``stop_at`` from ``data`` at ``pos``
    (``positioned``: returning them and the position of ``stop_at``'s value).

    ``schema`` is a parsed record schema; raises UnsupportedSchema when ``stop_at`` is not one of
    its fields or a field before it has a type outside the supported set.
    """
    fields = list(schema.get("fields", []))
    names = [f["name"] for f in fields]
    if schema.get("type") != "record" or stop_at not in names:
        raise UnsupportedSchema(f"no field {stop_at!r} to stop at")
    lines = ["def read(data, pos):", "    out = {}"]
    constants: dict[str, Any] = {"read_long": read_long}
    for field in fields[: names.index(stop_at)]:
        lines += _field(field["name"], field["type"], constants, "    ")
    lines.append("    return (out, pos)" if positioned else "    return out")
    namespace = dict(constants)
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<avro head reader {schema.get('name')}>", "exec"), namespace)
    reader: HeadReader = namespace["read"]
    return reader


def _field(name: str, schema: Any, constants: dict[str, Any], indent: str) -> list[str]:
    target = f"out[{name!r}]"
    if isinstance(schema, list):
        branches = [_scalar(b, constants) for b in schema]
        lines = _long("branch", indent)
        for i, branch in enumerate(branches):
            keyword = "if" if i == 0 else "elif"
            lines.append(f"{indent}{keyword} branch == {i}:")
            lines += _value(target, branch, indent + "    ")
        lines += [f"{indent}else:", f"{indent}    raise ValueError('union branch out of range')"]
        return lines
    return _value(target, _scalar(schema, constants), indent)


def _scalar(schema: Any, constants: dict[str, Any]) -> str:
    """The kind of a supported head type: a primitive name, or the constant of an enum's symbols."""
    if isinstance(schema, str) and schema in _SCALARS:
        return schema
    if isinstance(schema, Mapping) and schema.get("type") in _SCALARS:
        return str(schema["type"])
    if isinstance(schema, Mapping) and schema.get("type") == "enum":
        const = f"_SYMBOLS_{len(constants)}"
        constants[const] = tuple(schema["symbols"])
        return const
    raise UnsupportedSchema(f"a head reader does not read {schema!r}")


def _long(target: str, indent: str) -> list[str]:
    """Read a varint into ``target``: inline when it is one byte (most are), else by call."""
    return [
        f"{indent}b = data[pos]",
        f"{indent}if b < 128:",
        f"{indent}    {target} = (b >> 1) ^ -(b & 1)",
        f"{indent}    pos += 1",
        f"{indent}else:",
        f"{indent}    {target}, pos = read_long(data, pos)",
    ]


def _value(target: str, kind: str, indent: str) -> list[str]:
    if kind == "null":
        return [f"{indent}{target} = None"]
    if kind == "boolean":
        return [f"{indent}{target} = data[pos] == 1", f"{indent}pos += 1"]
    if kind in ("int", "long"):
        return _long(target, indent)
    if kind in ("string", "bytes"):
        value = "data[pos:end].decode('utf-8')" if kind == "string" else "bytes(data[pos:end])"
        return [
            *_long("size", indent),
            f"{indent}end = pos + size",
            f"{indent}if size < 0 or end > len(data):",
            f"{indent}    raise ValueError('length past the end')",
            f"{indent}{target} = {value}",
            f"{indent}pos = end",
        ]
    return [
        *_long("index", indent),
        f"{indent}if index < 0:",
        f"{indent}    raise ValueError('negative enum index')",
        f"{indent}{target} = {kind}[index]",
    ]


class SeveralBlocks(ValueError):
    """An array written in more than one block: its items are not one run of bytes."""


def compile_skipper(schema: Any) -> Skipper:
    """A function returning the position after the value of ``schema`` at ``pos`` in ``data``,
    reading no more of it than its lengths (any type but fixed-size floats is supported)."""
    named: dict[str, Any] = {}
    lines = ["def skip(data, pos):"]
    lines += _skip(schema, named, "    ")
    lines.append("    return pos")
    namespace: dict[str, Any] = {"read_long": read_long}
    exec(compile("\n".join(lines) + "\n", "<avro skipper>", "exec"), namespace)
    skipper: Skipper = namespace["skip"]
    return skipper


def _skip(schema: Any, named: dict[str, Any], indent: str) -> list[str]:
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, list):
        lines = _long("branch", indent)
        for i, branch in enumerate(schema):
            lines.append(f"{indent}{'if' if i == 0 else 'elif'} branch == {i}:")
            lines += _skip(branch, named, indent + "    ") or [f"{indent}    pass"]
        lines += [f"{indent}else:", f"{indent}    raise ValueError('union branch out of range')"]
        return lines
    kind = schema if isinstance(schema, str) else schema.get("type")
    if isinstance(schema, Mapping) and kind in ("record", "enum", "fixed"):
        named[str(schema["name"])] = schema
    if kind == "null":
        return []
    if kind == "boolean":
        return [f"{indent}pos += 1"]
    if kind in ("int", "long", "enum"):  # past the bytes with the continuation bit, and one more
        return [f"{indent}while data[pos] & 128:", f"{indent}    pos += 1", f"{indent}pos += 1"]
    if kind in ("float", "double"):
        return [f"{indent}pos += {4 if kind == 'float' else 8}"]
    if kind in ("string", "bytes"):
        return [
            *_long("size", indent),
            f"{indent}if size < 0:",
            f"{indent}    raise ValueError('negative length')",
            f"{indent}pos += size",
        ]
    if kind == "fixed":
        return [f"{indent}pos += {int(schema['size'])}"]
    if kind == "record":
        return [line for f in schema["fields"] for line in _skip(f["type"], named, indent)]
    if kind in ("array", "map"):
        inner = indent + "        "
        body = _skip(schema["items"] if kind == "array" else "string", named, inner)
        if kind == "map":
            body += _skip(schema["values"], named, inner)
        return [
            f"{indent}while True:",
            *_long("count", indent + "    "),
            f"{indent}    if count == 0:",
            f"{indent}        break",
            f"{indent}    if count < 0:",
            *_long("size", indent + "        "),
            f"{indent}        pos += size",
            f"{indent}        continue",
            f"{indent}    for _ in range(count):",
            *(body or [f"{inner}pass"]),
        ]
    raise UnsupportedSchema(f"no skipper for {schema!r}")


def array_items(data: bytes, pos: int, skip_item: Skipper) -> tuple[int, int, int, int]:
    """The array at ``pos`` as (items, where they start, where they end, the position after it),
    its items found by ``skip_item``; raises SeveralBlocks when it is not written in one block
    (as this project's writer and fastavro write every array)."""
    count, pos = read_long(data, pos)
    if count == 0:
        return 0, pos, pos, pos
    if count < 0:
        raise SeveralBlocks("a block with its size")
    start = pos
    for _ in range(count):
        pos = skip_item(data, pos)
    end = pos
    last, pos = read_long(data, pos)
    if last != 0:
        raise SeveralBlocks(f"a second block of {last}")
    if pos > len(data):
        raise ValueError("array past the end")
    return count, start, end, pos
