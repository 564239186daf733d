"""Typed wire messages (pure): a message is declared once, as a class whose annotations
are its JSON schema, and one checker decodes every wire's messages.

``decode(cls, obj)`` refuses unknown fields, fields of the wrong JSON type (a boolean is
never an integer) and missing required ones, each with a one-line ``ProtocolError``
naming the message and the field; nested messages are checked field by field too.
``encode(msg)`` is the JSON object: the tag (``cmd``, ``event``, ``type``) or the reply's
``"ok"`` first, then the fields (a request, and an error reply's optional detail, leave
out the optional ones not set).
``describe(cls)`` spells the schema for the contract test that pins every message.

Field types understood: ``str``, ``int``, ``float`` (an integer is accepted), ``bool``,
``list[str]``, ``list[dict[str, Any]]``, ``dict[str, str]``, ``dict[str, Any]``, another
message class, and any of these ``| None`` (then ``null`` is accepted; the field may be
left out when it has a default).

Messages are frozen records built by ``WireMessage`` itself rather than by
``dataclasses``: the CLI's ``coop ls`` imports this module, and ``dataclasses`` (with the
``inspect`` it pulls in, and the code it generates per class) would cost it more than the
whole rest of its imports. Type checkers see them as dataclasses (``dataclass_transform``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from coop_run.errors import ProtocolError

INVALID = "INVALID_COMMAND"  # the code of every schema refusal (protocol.INVALID_COMMAND)

M = TypeVar("M", bound="WireMessage")


@typing.dataclass_transform(frozen_default=True)
class WireMessage:
    """Base of every message. ``TAG_KEY``/``TAG`` name it on the wire (``{"cmd": "ls"}``);
    a reply has no tag and carries ``"ok": true`` or ``false`` (``OK``); a nested part has
    neither. Fields are the class's annotations, in order; a class attribute of the same
    name is the field's default."""

    TAG_KEY: ClassVar[str | None] = None
    TAG: ClassVar[str | None] = None
    OK: ClassVar[bool | None] = None
    OMIT_UNSET: ClassVar[bool] = False  # optional fields left at None are not sent
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The class's own annotations (strings: PEP 563); not ``inspect``: see above.
        annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
        own = [name for name, hint in annotations.items()
               if not str(hint).startswith(("ClassVar", "typing.ClassVar"))]
        cls.FIELDS = (*cls.FIELDS, *(name for name in own if name not in cls.FIELDS))
        defaulted = False
        for name in cls.FIELDS:
            if hasattr(cls, name):
                defaulted = True
            elif defaulted:
                raise TypeError(f"{cls.__name__}: required field {name!r} after a default")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self.FIELDS
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}: {len(args)} positional arguments for "
                            f"{len(names)} fields")
        values = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name not in names or name in values:
                raise TypeError(f"{type(self).__name__}: unexpected or repeated {name!r}")
            values[name] = value
        for name in names:
            if name not in values:
                if not hasattr(type(self), name):
                    raise TypeError(f"{type(self).__name__}: missing field {name!r}")
                values[name] = getattr(type(self), name)
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]  # fields may be lists and dicts

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.FIELDS)
        return f"{type(self).__name__}({shown})"

    @classmethod
    def wire_name(cls) -> str:
        return cls.TAG or cls.__name__


class _Field:
    """One field's check (value, what) -> the value as the message holds it."""

    __slots__ = ("check", "name", "required", "spelled")

    def __init__(self, name: str, check: Callable[[Any, str], Any], spelled: str,
                 required: bool) -> None:
        self.name, self.check, self.spelled, self.required = name, check, spelled, required


def _fail(what: str, spelled: str) -> ProtocolError:
    return ProtocolError(f"{what} must be {spelled}", code=INVALID)


def _scalar(kind: type, spelled: str) -> tuple[Callable[[Any, str], Any], str]:
    def check(value: Any, what: str) -> Any:
        if isinstance(value, bool) != (kind is bool):
            raise _fail(what, spelled)
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            raise _fail(what, spelled)
        return value
    return check, spelled


_SCALARS: Mapping[Any, tuple[type, str]] = {
    str: (str, "a string"), int: (int, "an integer"), float: (float, "a number"),
    bool: (bool, "a boolean"),
}


def _checker(hint: Any) -> tuple[Callable[[Any, str], Any], str]:
    """The check of one annotation, and how the schema spells it."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1 or len(args) != 2:
            raise TypeError(f"unsupported union {hint!r}")
        check, spelled = _checker(inner[0])

        def optional(value: Any, what: str) -> Any:
            return None if value is None else check(value, what)
        return optional, f"{spelled} or null"
    if hint in _SCALARS:
        return _scalar(*_SCALARS[hint])
    if origin is list and len(args) == 1:
        item, item_spelled = _checker(args[0])
        if isinstance(args[0], type) and issubclass(args[0], WireMessage):
            spelled = f"a list of {args[0].__name__} objects"
        else:
            spelled = f"a list of {item_spelled.removeprefix('a ').removeprefix('an ')}s"

        def listed(value: Any, what: str) -> Any:
            if not isinstance(value, list):
                raise _fail(what, spelled)
            try:
                return [item(v, what) for v in value]
            except ProtocolError:
                raise _fail(what, spelled) from None
        return listed, spelled
    if origin is dict and args and args[0] is str:
        if args[1] is Any:
            spelled = "an object"

            def any_map(value: Any, what: str) -> Any:
                if not isinstance(value, dict):
                    raise _fail(what, spelled)
                return value
            return any_map, spelled
        member, member_spelled = _checker(args[1])
        spelled = "an object of " + member_spelled.removeprefix("a ").removeprefix("an ") + "s"

        def mapping(value: Any, what: str) -> Any:
            if not isinstance(value, dict):
                raise _fail(what, spelled)
            try:
                return {str(k): member(v, what) for k, v in value.items()}
            except ProtocolError:
                raise _fail(what, spelled) from None
        return mapping, spelled
    if isinstance(hint, type) and issubclass(hint, WireMessage):
        nested: type[WireMessage] = hint
        spelled = f"an object ({nested.__name__})"

        def part(value: Any, what: str) -> Any:
            if not isinstance(value, dict):
                raise _fail(what, spelled)
            return decode(nested, value)
        return part, spelled
    raise TypeError(f"unsupported field type {hint!r}")


_FIELDS: dict[type[WireMessage], tuple[_Field, ...]] = {}


def _fields(cls: type[WireMessage]) -> tuple[_Field, ...]:
    known = _FIELDS.get(cls)
    if known is not None:
        return known
    hints = typing.get_type_hints(cls)
    found = []
    for name in cls.FIELDS:
        check, spelled = _checker(hints[name])
        found.append(_Field(name, check, spelled, not hasattr(cls, name)))
    _FIELDS[cls] = tuple(found)
    return _FIELDS[cls]


def prepare_all() -> None:
    """Work out every declared message's checks now (``get_type_hints`` costs about
    0.1 ms a class on first use): a process that forks workers (the zygote) does it once,
    before its heap is frozen, instead of every supervisor on its first message."""
    pending: list[type[WireMessage]] = [WireMessage]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        _fields(cls)


def decode(cls: type[M], obj: Mapping[str, Any]) -> M:
    """``obj`` (a decoded JSON object) as a ``cls``; ``ProtocolError`` if it does not fit.
    The tag key and a reply's ``ok`` are the caller's to have checked."""
    kind = cls.wire_name()
    spec = {f.name: f for f in _fields(cls)}
    values: dict[str, Any] = {}
    for key, value in obj.items():
        if key == cls.TAG_KEY or (cls.OK is not None and key == "ok"):
            continue
        field = spec.get(key)
        if field is None:
            raise ProtocolError(f"{kind}: unknown field {str(key)[:40]!r}", code=INVALID)
        values[key] = field.check(value, f"{kind}: field {key!r}")
    for field in spec.values():
        if field.required and field.name not in values:
            raise ProtocolError(f"{kind}: missing field {field.name!r}", code=INVALID)
    return cls(**values)


def encode(message: WireMessage) -> dict[str, Any]:
    """The JSON object of ``message``: its tag (or ``"ok": true``) first, then its fields."""
    out: dict[str, Any] = {}
    if message.TAG_KEY is not None:
        out[message.TAG_KEY] = message.TAG
    if message.OK is not None:
        out["ok"] = message.OK
    for field in _fields(type(message)):
        value = getattr(message, field.name)
        if value is None and message.OMIT_UNSET and not field.required:
            continue
        out[field.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    """A field's JSON value: nested messages (alone or in a list) encoded."""
    if isinstance(value, WireMessage):
        return encode(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def describe(cls: type[WireMessage]) -> dict[str, str]:
    """The schema as the contract test pins it: field -> type ("?" when optional)."""
    out = {}
    if cls.TAG_KEY is not None:
        out[cls.TAG_KEY] = repr(cls.TAG)
    if cls.OK is not None:
        out["ok"] = "true" if cls.OK else "false"
    for field in _fields(cls):
        out[field.name] = field.spelled + ("" if field.required else " ?")
    return out


def table(*classes: type[M]) -> dict[str, type[M]]:
    """Tag -> class, for a wire's dispatch; a repeated tag is a programming error."""
    found: dict[str, type[M]] = {}
    for cls in classes:
        if cls.TAG is None or cls.TAG in found:
            raise ValueError(f"{cls.__name__}: no tag, or a repeated one")
        found[cls.TAG] = cls
    return found
