"""A base for the frozen dataclasses that cross process boundaries (the parse workers' results)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import fields
from typing import Any

_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _field_values(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """What ``cls(*values)`` takes back: every field, in order (so every field must be an ``__init__`` one)."""
    getter = _GETTERS.get(cls)
    if getter is None:
        if not all(f.init for f in fields(cls)):
            raise TypeError(f"{cls.__name__} has a field __init__ does not take: it cannot pickle as its fields")
        get = operator.attrgetter(*(f.name for f in fields(cls)))
        getter = _GETTERS[cls] = (lambda obj: (get(obj),)) if len(fields(cls)) == 1 else get
    return getter


class Picklable:
    """Base of the frozen dataclasses sent between processes: each pickles as its class and its field values,
    so unpickling is one ``__init__`` call.

    Without it, a frozen dataclass with slots pickles through the ``__getstate__``/``__setstate__`` pair that
    ``dataclasses`` adds, which looks the fields up and sets them one at a time in Python: on the corpus mix,
    pickling and unpickling what the parse workers return took about a quarter longer that way.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        cls = type(self)
        return cls, _field_values(cls)(self)

