"""Routers: named procedures and nested routers, flattened to dotted method names."""

from __future__ import annotations

from typing import Union

from .procedure import Procedure

Entry = Union[Procedure, "Router"]


class Router:
    """A tree of procedures; `procedures` is the flat table the endpoint dispatches on.

    `Router(a=p, b=Router(c=q))` serves methods "a" and "b.c". Flattening happens once,
    here, so dispatch is a single dictionary lookup.
    """

    _procedures: dict[str, Procedure]

    def __init__(self, **entries: Entry) -> None:
        flat: dict[str, Procedure] = {}
        for name, entry in entries.items():
            if not name or "." in name:
                # A dot in a name would make "a.b" ambiguous between a router and a procedure.
                raise ValueError(f"router entry names must be non-empty and dot-free, got {name!r}")
            if isinstance(entry, Router):
                for sub_name, procedure in entry._procedures.items():
                    flat[f"{name}.{sub_name}"] = procedure
            elif isinstance(entry, Procedure):
                if entry.kind is None:
                    raise TypeError(
                        f"router entry {name!r} is an unfinished procedure: end it with .query(), .mutation() or .subscription()"
                    )
                flat[name] = entry
            else:
                raise TypeError(f"router entry {name!r} must be a Procedure or a Router, got {entry!r}")
        self._procedures = flat

    @property
    def procedures(self) -> dict[str, Procedure]:
        """Every procedure by its dotted method name (a copy: routers do not change)."""
        return dict(self._procedures)

    def __repr__(self) -> str:
        return f"Router({', '.join(self._procedures)})"
