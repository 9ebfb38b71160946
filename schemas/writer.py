"""Avro binary writers compiled for one record schema: the encoder of every event on the hot path.

fastavro's generic writer walks the schema for every record; a gantry night emits hundreds of
thousands of FileArrived events, so each record schema is turned once into one Python function
that writes its fields in order with no schema lookups. The output is byte-for-byte what fastavro
writes (the tests compare them on generated records), and schemas using a type outside the
supported set (null, boolean, int, long, string, bytes, enum, records, arrays, maps, and unions of
null and one of those) get no compiled writer: the codec keeps fastavro for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

_SMALL = [bytes([i]) for i in range(128)]
# Two varint bytes, both with the continuation bit, for every 14-bit group.
_PAIRS = [bytes([(x & 127) | 128, (x >> 7) | 128]) for x in range(16384)]
_MIN_LONG, _MAX_LONG = -(1 << 63), (1 << 63) - 1
_MIN_INT, _MAX_INT = -(1 << 31), (1 << 31) - 1  # checked inline by the writers
_PRIMITIVE = ("null", "boolean", "int", "long", "string", "bytes")

_MEMO: dict[int, bytes] = {}
_MEMO_LIMIT = 8192

Writer = Callable[[Mapping[str, Any]], bytes]


class Remembered(dict[str, Any]):
    """A record value written many times unchanged, which remembers its own bytes: the first
    write of it as an array item stores them in ``avro``, and later writes copy them.

    For values never changed once made, such as a FileState's history transitions: a file's
    state is written again at every change, with every transition before it. Changing one after
    it was written would write stale bytes.
    """

    __slots__ = ("avro",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.avro: bytes | None = None


class EncodedItems(Sequence[Any]):
    """An array read back from a record and kept as its items' bytes, with any items added since:
    written again as those bytes followed by the added items, decoded only when looked into.

    For a FileState the state keeper reads back from its copy: the file's history is neither
    decoded nor encoded again for the next state it writes, whatever its length. ``kept``: how
    many items ``items`` holds; ``decode`` turns the whole array's encoding (count, items, end)
    into its items, on first look.
    """

    __slots__ = ("_decode", "_decoded", "added", "items", "kept")

    def __init__(
        self,
        kept: int,
        items: bytes,
        decode: Callable[[bytes], list[Any]],
        added: tuple[Any, ...] = (),
    ) -> None:
        self.kept = kept
        self.items = items
        self.added = added
        self._decode = decode
        self._decoded: list[Any] | None = None

    def plus(self, item: Any) -> EncodedItems:
        """This array with ``item`` added at its end (nothing is decoded; what was decoded of
        the kept items is shared, not decoded again)."""
        longer = EncodedItems(self.kept, self.items, self._decode, (*self.added, item))
        longer._decoded = self._decoded
        return longer

    def written_head(self) -> bytes:
        """The block's count and the kept items' bytes, as the array's encoding begins."""
        total = self.kept + len(self.added)
        return long_bytes(total) + self.items if total else b""

    def _all(self) -> list[Any]:
        if self._decoded is None:
            whole = long_bytes(self.kept) + self.items + b"\x00" if self.kept else b"\x00"
            self._decoded = self._decode(whole)
        return [*self._decoded, *self.added]

    def __len__(self) -> int:
        return self.kept + len(self.added)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        return self._all()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list | tuple | EncodedItems):
            return self._all() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a sequence that compares by its items

    def __repr__(self) -> str:
        return f"EncodedItems({self._all()!r})"


class UnsupportedSchema(Exception):
    """The schema uses a type the compiled writer does not write; use fastavro instead."""


def varint(n: int) -> bytes:
    """Unsigned LEB128 of ``n`` (the zig-zag encoded value), as Avro writes ints and longs."""
    if n < 128:
        return _SMALL[n]
    if n < 1 << 28:
        out = bytearray()
        while n > 127:
            out.append((n & 127) | 128)
            n >>= 7
        out.append(n)
        return bytes(out)
    size = (n.bit_length() + 6) // 7
    shift = 7 * (size - 1)
    low = n & ((1 << shift) - 1)
    body = (
        _PAIRS[low & 16383]
        + _PAIRS[(low >> 14) & 16383]
        + _PAIRS[(low >> 28) & 16383]
        + _PAIRS[(low >> 42) & 16383]
        + _PAIRS[(low >> 56) & 16383]
    )
    return body[: size - 1] + _SMALL[n >> shift]


def _remember(n: int, encoded: bytes) -> bytes:
    if len(_MEMO) >= _MEMO_LIMIT:
        _MEMO.clear()
    _MEMO[n] = encoded
    return encoded


def long_bytes(n: int) -> bytes:
    """An Avro long: zig-zag, then varint; refuses what does not fit in 64 bits."""
    if not _MIN_LONG <= n <= _MAX_LONG:
        raise ValueError(f"{n} does not fit in an Avro long")
    return varint((n << 1) ^ (n >> 63))


def bytes_bytes(b: bytes) -> bytes:
    if not isinstance(b, bytes | bytearray):
        raise TypeError(f"{type(b).__name__} is not bytes")
    return long_bytes(len(b)) + bytes(b)


def boolean_bytes(v: bool) -> bytes:
    if not isinstance(v, bool):
        raise TypeError(f"{type(v).__name__} is not a boolean")
    return b"\x01" if v else b"\x00"


def compile_writer(schema: Mapping[str, Any], prefix: bytes = b"") -> Writer:
    """A function writing ``prefix`` then one record of ``schema`` (parsed) as Avro binary."""
    gen = _Generator()
    if schema.get("type") != "record":
        raise UnsupportedSchema("only record schemas are compiled")
    gen.node(dict(schema), "value", "    ")
    source = f"def write(value):\n    parts = [{prefix!r}]\n    add = parts.append\n"
    source += "".join(gen.lines) + "    return b''.join(parts)\n"
    namespace: dict[str, Any] = dict(gen.constants)
    exec(compile(source, f"<avro writer {schema.get('name')}>", "exec"), namespace)
    writer: Writer = namespace["write"]
    return writer


class _Generator:
    """Emits the Python statements that write one schema node held in a variable."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {
            "long_bytes": long_bytes,
            "bytes_bytes": bytes_bytes,
            "boolean_bytes": boolean_bytes,
            "_SMALL": _SMALL,
            "varint": varint,
            "_memo_get": _MEMO.get,
            "_remember": _remember,
            "Remembered": Remembered,
            "EncodedItems": EncodedItems,
        }
        self._names = 0
        self._named: dict[str, Any] = {}

    def _fresh(self, stem: str) -> str:
        self._names += 1
        return f"{stem}{self._names}"

    def _const(self, value: Any) -> str:
        name = self._fresh("_k")
        self.constants[name] = value
        return name

    def record(self, schema: Mapping[str, Any], var: str, indent: str) -> None:
        for field in schema["fields"]:
            fvar = self._fresh("f")
            if "default" in field:
                default = self._const(field["default"])
                self.lines.append(f"{indent}{fvar} = {var}.get({field['name']!r}, {default})\n")
            else:
                self.lines.append(f"{indent}{fvar} = {var}[{field['name']!r}]\n")
            self.node(field["type"], fvar, indent)

    def _register(self, schema: Mapping[str, Any]) -> None:
        name = schema["name"]
        space = schema.get("namespace")
        self._named[name] = schema
        self._named[name.rsplit(".", 1)[-1]] = schema
        if space and "." not in name:
            self._named[f"{space}.{name}"] = schema

    def node(self, schema: Any, var: str, indent: str) -> None:
        if isinstance(schema, str) and schema in self._named:
            schema = self._named[schema]
        if isinstance(schema, list):
            self.union(schema, var, indent)
            return
        kind = schema if isinstance(schema, str) else schema.get("type")
        if isinstance(schema, dict) and kind in ("enum", "record"):
            self._register(schema)
        if kind == "null":
            self.lines.append(f"{indent}if {var} is not None: raise TypeError('expected null')\n")
        elif kind == "string":
            # Inlined: most strings are short, and a call per field is most of the cost.
            self.lines.append(f"{indent}{var} = {var}.encode()\n")
            self.lines.append(f"{indent}n = len({var})\n")
            self.lines.append(f"{indent}add(_SMALL[n << 1] if n < 64 else long_bytes(n))\n")
            self.lines.append(f"{indent}add({var})\n")
        elif kind in ("int", "long"):
            low, high = (_MIN_INT, _MAX_INT) if kind == "int" else (_MIN_LONG, _MAX_LONG)
            self.lines.append(f"{indent}if not {low} <= {var} <= {high}:\n")
            self.lines.append(
                f"{indent}    raise ValueError(f'{{{var}}} does not fit in an {kind}')\n"
            )
            # Times and sizes repeat from event to event: their encodings are memoised.
            self.lines.append(f"{indent}b = _memo_get({var})\n")
            self.lines.append(f"{indent}if b is None:\n")
            self.lines.append(
                f"{indent}    b = _remember({var}, varint(({var} << 1) ^ ({var} >> 63)))\n"
            )
            self.lines.append(f"{indent}add(b)\n")
        elif kind in _PRIMITIVE:
            self.lines.append(f"{indent}add({kind}_bytes({var}))\n")
        elif kind == "enum":
            table = self._const({s: _index_bytes(i) for i, s in enumerate(schema["symbols"])})
            self.lines.append(f"{indent}add({table}[{var}])\n")
        elif kind == "record":
            self.record(schema, var, indent)
        elif kind == "array":
            item = self._fresh("i")
            # An array read back as bytes: those bytes, then the items added since.
            self.lines.append(f"{indent}if type({var}) is EncodedItems:\n")
            self.lines.append(f"{indent}    add({var}.written_head())\n")
            self.lines.append(f"{indent}    for {item} in {var}.added:\n")
            self._item(schema["items"], item, indent + "        ")
            self.lines.append(f"{indent}else:\n")
            self._block(var, var, indent + "    ")
            self.lines.append(f"{indent}        for {item} in {var}:\n")
            self._item(schema["items"], item, indent + "            ")
            self.lines.append(f"{indent}add(b'\\x00')\n")
        elif kind == "map":
            key, item = self._fresh("k"), self._fresh("v")
            self._block(var, var, indent)
            self.lines.append(f"{indent}    for {key}, {item} in {var}.items():\n")
            self.node("string", key, indent + "        ")
            self.node(schema["values"], item, indent + "        ")
            self.lines.append(f"{indent}add(b'\\x00')\n")
        else:
            raise UnsupportedSchema(f"type {kind!r} has no compiled writer")

    def _item(self, schema: Any, var: str, indent: str) -> None:
        """An array item; a record item that is :class:`Remembered` is written once, then its
        bytes are copied."""
        named = self._named.get(schema, schema) if isinstance(schema, str) else schema
        if not (isinstance(named, dict) and named.get("type") == "record"):
            self.node(schema, var, indent)
            return
        start, piece = self._fresh("s"), self._fresh("p")
        self.lines.append(f"{indent}if type({var}) is Remembered:\n")
        self.lines.append(f"{indent}    {piece} = {var}.avro\n")
        self.lines.append(f"{indent}    if {piece} is None:\n")
        self.lines.append(f"{indent}        {start} = len(parts)\n")
        self.node(schema, var, indent + "        ")
        self.lines.append(f"{indent}        {piece} = {var}.avro = b''.join(parts[{start}:])\n")
        self.lines.append(f"{indent}        del parts[{start}:]\n")
        self.lines.append(f"{indent}    add({piece})\n")
        self.lines.append(f"{indent}else:\n")
        self.node(schema, var, indent + "    ")

    def _block(self, var: str, items: str, indent: str) -> None:
        """Open an array's or map's one block (as fastavro writes it: the count, the items, then
        the empty block that ends it; an empty one is the end alone)."""
        self.lines.append(f"{indent}if len({items}):\n")
        self.lines.append(f"{indent}    add(long_bytes(len({var})))\n")

    def union(self, branches: list[Any], var: str, indent: str) -> None:
        kinds = [
            b if isinstance(b, str) else "union" if isinstance(b, list) else b.get("type")
            for b in branches
        ]
        if len(branches) != 2 or "null" not in kinds:
            raise UnsupportedSchema("only unions of null and one other type are compiled")
        null_index = kinds.index("null")
        other = branches[1 - null_index]
        self.lines.append(f"{indent}if {var} is None:\n")
        self.lines.append(f"{indent}    add({_index_bytes(null_index)!r})\n")
        self.lines.append(f"{indent}else:\n")
        self.lines.append(f"{indent}    add({_index_bytes(1 - null_index)!r})\n")
        self.node(other, var, indent + "    ")


def _index_bytes(index: int) -> bytes:
    return long_bytes(index)
