"""DNS as a test says it is, through the sender's resolver seam, and an IPv6 address that
black-holes connections."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

from aiohttp.abc import AbstractResolver, ResolveResult


class StaticResolver(AbstractResolver):
    """DNS as the test says it is: name → addresses, anything else does not exist."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in self.table[host]
        ]

    async def close(self) -> None:
        pass


@contextlib.contextmanager
def black_hole_v6(port: int) -> Iterator[None]:
    """[::1]:port accepts no connection and refuses none: its accept queue is full and
    never drained, so further SYNs are dropped, as by a firewall that black-holes IPv6."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("::1", port))
        listener.listen(0)
        for _ in range(4):
            filler = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("::1", port))
            fillers.append(filler)
        time.sleep(0.1)  # the handshakes complete and fill the queue
        yield
    finally:
        for s in fillers:
            s.close()
        listener.close()
