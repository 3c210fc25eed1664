"""The RPC root, tRPC's initTRPC: where an application gets its first builder and routers."""

from __future__ import annotations

from typing import Any

from .procedure import Procedure
from .router import Entry, Router


class RPC:
    """Holds the empty procedure builder every procedure of an application starts from.

    `context_type` documents the context handlers receive as ctx: what `create_context`
    returns, as the middlewares enrich it. It is not enforced.
    """

    def __init__(self, context_type: type[Any] | None = None) -> None:
        self.context_type = context_type
        self._procedure = Procedure()

    @property
    def procedure(self) -> Procedure:
        """The empty builder; being immutable, it is safe to hand out the same one."""
        return self._procedure

    def router(self, **entries: Entry) -> Router:
        """A router of procedures and nested routers, e.g. `rpc.router(batchExport=...)`."""
        return Router(**entries)
