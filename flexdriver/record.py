"""Immutable records for the driver's values (slabs, plans, reports, requests).

`@record` turns a class of annotated fields (with defaults where given) into a named tuple of
those fields, keeping its methods, properties and docstring: `Slab(name=..., ...)`,
`slab._replace(state=...)`, equality and hashing by value, no attribute can be set.

Not dataclasses: importing `dataclasses` pulls in `inspect` (and with it `ast`, `dis`,
`tokenize`), and each frozen dataclass compiles its methods at import; together that was about a
third of the time every mount and unmount spent importing. A named tuple is built from the
already-imported `collections`.
"""

from __future__ import annotations

import collections

_NOT_COPIED = ("__dict__", "__weakref__", "__annotations__")


def record(cls: type) -> type:
    names = list(cls.__dict__.get("__annotations__", {}))
    defaults = [cls.__dict__[name] for name in names if name in cls.__dict__]
    if any(name not in cls.__dict__ for name in names[len(names) - len(defaults):]):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    base = collections.namedtuple(cls.__name__, names, defaults=defaults)
    namespace = {key: value for key, value in cls.__dict__.items() if key not in _NOT_COPIED and key not in names}
    namespace["__slots__"] = ()
    return type(cls.__name__, (base,), namespace)
