"""``@model`` behaves as ``@dataclass(frozen=True, slots=True)`` does, and is cheaper to make."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from lamina.model import model


@model
class Point:
    """A doc."""

    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PointDC:
    """A doc."""

    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@model(kw_only=True)
class Options:
    name: str
    level: int = 1


@model(frozen=False)
class Counter:
    count: int = 0
    seen: list[str] = field(default_factory=list)


@model
class Derived:
    raw: str
    cached: list[str] = field(default_factory=list, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cached", [self.raw.upper()])


def test_same_signature_repr_equality_and_hash_as_a_frozen_dataclass() -> None:
    a, b = Point(1, 2, ("t",)), PointDC(1, 2, ("t",))
    assert repr(a).replace("Point(", "") == repr(b).replace("PointDC(", "")
    assert repr(a) == "Point(x=1, y=2, tags=('t',))"
    assert Point(1) == Point(1, 0, ()) and Point(1) != Point(2) and Point(1) != PointDC(1)
    assert Point(1, extra={"a": "b"}) == Point(1)  # compare=False
    assert hash(Point(1, 2)) == hash(Point(1, 2)) and len({Point(1), Point(1), Point(2)}) == 2
    assert Point(x=3).x == 3 and Point(1).extra == {} and Point(1).extra is not Point(1).extra
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    assert Point.__init__.__qualname__ == "Point.__init__"


def test_frozen_and_slotted() -> None:
    p = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.x  # type: ignore[misc]
    assert not hasattr(p, "__dict__") and "x" in Point.__slots__


def test_still_a_dataclass_for_fields_replace_and_asdict() -> None:
    p = Point(1, 2)
    assert [f.name for f in dataclasses.fields(p)] == ["x", "y", "tags", "extra"]
    assert dataclasses.replace(p, y=5) == Point(1, 5)
    assert dataclasses.asdict(p) == {"x": 1, "y": 2, "tags": (), "extra": {}}
    assert dataclasses.is_dataclass(Point)


def test_copies_and_pickles() -> None:
    p = Point(1, 2, ("a",), {"k": "v"})
    for clone in (copy.copy(p), copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        assert clone == p and clone.extra == {"k": "v"}


def test_keyword_only() -> None:
    assert Options(name="a") == Options(name="a", level=1)
    with pytest.raises(TypeError):
        Options("a")  # type: ignore[misc]


def test_mutable_kind_is_unhashable() -> None:
    c = Counter()
    c.count += 1
    c.seen.append("x")
    assert c == Counter(1, ["x"]) and repr(c) == "Counter(count=1, seen=['x'])"
    with pytest.raises(TypeError):
        hash(c)


def test_post_init_and_init_false_fields() -> None:
    d = Derived("a")
    assert d.cached == ["A"] and d == Derived("a") and repr(d) == "Derived(raw='a')"


def test_only_init_is_compiled_per_class() -> None:
    """What makes a model cheap to define: the other methods share their code between classes."""
    for name in ("__repr__", "__eq__", "__hash__", "__getstate__"):
        assert getattr(Point, name).__code__ is getattr(Derived, name).__code__
    assert Point.__setattr__ is Derived.__setattr__
    assert Point.__init__.__code__ is not Derived.__init__.__code__


def test_an_undocumented_model_gets_a_short_docstring_without_inspect() -> None:
    @model
    class Bare:
        a: int
        b: str = ""

    assert Bare.__doc__ == "Bare(a, b)"
