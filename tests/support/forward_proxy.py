"""A tiny forward proxy on 127.0.0.1 for the outbound-proxy tests: CONNECT tunnels and
absolute-form requests, relayed byte for byte. Hosts in `deny` are refused as smokescreen
refuses them (403 with `X-Smokescreen-Error`); `routes` maps names the test makes up to
loopback ports (the proxy resolves names, not parcelhook)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

DENIED = b"egress denied: the destination is not allowed"


class ForwardProxy:
    def __init__(
        self, *, deny: frozenset[str] = frozenset(), routes: dict[str, int] | None = None
    ) -> None:
        self.deny = deny
        self.routes = routes or {}
        self.seen: list[tuple[str, str]] = []  # (method, request target) as received
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, rest = head.split(b"\r\n", 1)
        method, target, version = line.decode("latin-1").split(" ", 2)
        self.seen.append((method, target))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            head = b""
        else:
            parts = urlsplit(target)
            host, port = parts.hostname or "", str(parts.port or 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            # one request per connection: what follows on a kept-alive one is not rewritten
            head = f"{method} {path} {version}\r\nConnection: close\r\n".encode("latin-1") + rest
        if host in self.deny:
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nX-Smokescreen-Error: %s\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n" % DENIED
            )
            await writer.drain()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1" if host in self.routes else host, self.routes.get(host, int(port))
            )
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(head)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()
