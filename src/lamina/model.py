"""``@model``: lamina's frozen, slotted dataclasses, made at a third of the cost.

Python 3.11's ``@dataclass(frozen=True, slots=True)`` compiles six methods per class
(``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``), each
through its own ``exec``: about 1.2 ms per class on the reference VM. A build imports some 70
model classes, so that was a quarter of a short build's time. ``@model`` lets
:func:`dataclasses.dataclass` collect the fields and make the slotted class as usual, then
compiles only ``__init__`` and gives the other methods as shared functions over the field
names. The classes remain dataclasses (``fields``, ``replace``, ``asdict`` work) and behave
like ``@dataclass(frozen=True, slots=True[, kw_only=True])``: same ``__init__`` signature,
``repr``, equality, hashing, :class:`~dataclasses.FrozenInstanceError`, copying and pickling.
``frozen=False`` gives the mutable (unhashable) kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T", bound=type)

_HAS_FACTORY = object()  # the default of a field whose default comes from a factory


@overload
def model(cls: T, /) -> T: ...


@overload
def model(*, frozen: bool = True, kw_only: bool = False) -> Callable[[T], T]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def model(cls: Any = None, /, *, frozen: bool = True, kw_only: bool = False) -> Any:
    """Make ``cls`` a slotted dataclass: frozen (hashable) by default, or mutable with ``frozen=False``."""

    def wrap(cls: T) -> T:
        return _make(cls, frozen=frozen, kw_only=kw_only)

    return wrap if cls is None else wrap(cls)


def _make(cls: T, *, frozen: bool, kw_only: bool) -> T:
    undocumented = not cls.__doc__
    if undocumented:  # else dataclasses writes one from inspect.signature: 9 ms for the first class
        cls.__doc__ = "-"
    made: Any = dataclasses.dataclass(cls, init=False, repr=False, eq=False, frozen=False, slots=True,
                                      kw_only=kw_only)
    fields = dataclasses.fields(made)
    if undocumented:
        made.__doc__ = f"{made.__name__}({', '.join(f.name for f in fields)})"
    compared = tuple(f.name for f in fields if f.compare)
    key: Callable[[Any], Any] = attrgetter(*compared) if compared else _no_key
    made.__init__ = _init(made, fields, frozen)
    made.__repr__ = _repr_of(tuple(f.name for f in fields if f.repr))
    made.__eq__ = _eq_of(key)
    if frozen:
        made.__hash__ = _hash_of(key)
        made.__setattr__ = _frozen_setattr
        made.__delattr__ = _frozen_delattr
        made.__getstate__ = _getstate_of(tuple(f.name for f in fields))
        made.__setstate__ = _setstate_of(tuple(f.name for f in fields))
    else:
        made.__hash__ = None
    for name in ("__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__", "__getstate__", "__setstate__"):
        method = made.__dict__.get(name)
        if method is not None:
            method.__qualname__ = f"{made.__qualname__}.{name}"
    return made  # type: ignore[no-any-return]


def _init(cls: type, fields: tuple[dataclasses.Field[Any], ...], frozen: bool) -> Callable[..., None]:
    """``__init__`` as dataclasses writes it, compiled once: arguments in field order, keyword-only last."""
    scope: dict[str, Any] = {"_set": object.__setattr__, "_HAS_FACTORY": _HAS_FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in fields:
        value = f.name
        if f.default is not dataclasses.MISSING:
            scope[f"_default_{f.name}"] = f.default
            default = f"=_default_{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_factory_{f.name}"] = f.default_factory
            default = "=_HAS_FACTORY"
            value = f"_factory_{f.name}() if {f.name} is _HAS_FACTORY else {f.name}"
        else:
            default = ""
        if not f.init:
            if f.default is not dataclasses.MISSING:
                value = f"_default_{f.name}"
            elif f.default_factory is not dataclasses.MISSING:
                value = f"_factory_{f.name}()"
            else:
                continue  # dataclasses leaves such a field unset as well
        else:
            (keyword if f.kw_only else positional).append(f"{f.name}{default}")
        body.append(f"  _set(self, {f.name!r}, {value})" if frozen else f"  self.{f.name} = {value}")
    if hasattr(cls, "__post_init__"):
        body.append("  self.__post_init__()")
    params = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({params}):\n" + ("\n".join(body) or "  pass") + "\n"
    exec(source, scope)  # noqa: S102 - our own text, from the class's field names
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    return init


def _no_key(obj: object) -> tuple[()]:
    return ()


def _repr_of(names: tuple[str, ...]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:
        return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

    return __repr__


def _eq_of(key: Callable[[Any], Any]) -> Callable[[Any, object], Any]:
    def __eq__(self: Any, other: object) -> Any:
        if other.__class__ is self.__class__:
            return key(self) == key(other)
        return NotImplemented

    return __eq__


def _hash_of(key: Callable[[Any], Any]) -> Callable[[Any], int]:
    def __hash__(self: Any) -> int:
        return hash(key(self))

    return __hash__


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _getstate_of(names: tuple[str, ...]) -> Callable[[Any], list[Any]]:
    def __getstate__(self: Any) -> list[Any]:
        return [getattr(self, n) for n in names]

    return __getstate__


def _setstate_of(names: tuple[str, ...]) -> Callable[[Any, list[Any]], None]:
    def __setstate__(self: Any, state: list[Any]) -> None:
        for name, value in zip(names, state, strict=True):
            object.__setattr__(self, name, value)

    return __setstate__
