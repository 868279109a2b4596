"""A base for the frozen dataclasses that cross process boundaries (the parse workers' results)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import fields
from typing import Any

_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _field_values(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """What ``cls(*values)`` takes back: every field, in order. So ``__init__`` must take exactly the fields,
    each by position: no field left out of it, keyword-only or init-only."""
    getter = _GETTERS.get(cls)
    if getter is None:
        import inspect

        names = [f.name for f in fields(cls)]
        taken = list(inspect.signature(cls).parameters.values())
        if [p.name for p in taken] != names or any(p.kind is not p.POSITIONAL_OR_KEYWORD for p in taken):
            raise TypeError(
                f"{cls.__name__}.__init__ does not take exactly its fields, by position: it cannot pickle as them"
            )
        get = operator.attrgetter(*names)
        getter = _GETTERS[cls] = (lambda obj: (get(obj),)) if len(names) == 1 else get
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
