"""uvicorn's HTTP protocol, with each answer of known length sent in one write.

uvicorn writes a response's status line and headers as soon as the app starts it, and the
body when the app sends it: two `send()` calls per answer. On loopback each one is also the
peer's TCP receive, run inside the sender's system call, and they were the largest single
cost left in a status change (`write` was 17 % of `serve`'s samples end to end; see
docs/performance.md, "One write per answer"). The app sends both parts back to back, so the
headers are held until the body's first write and go out with it.

Only headers that announce a Content-Length are held: a streamed answer (chunked) sends them
at once, so that a client waiting on a stream sees its headers before the first chunk, and
an interim `100 Continue` is never held (the client waits for it before sending its body).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _OneWritePerAnswer:
    """The connection's transport, holding back one header block until the next write."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held:
            data, self._held = self._held + data, b""
        elif _is_sized_head(data):
            self._held = bytes(data)
            return
        self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def _flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        # everything else (is_closing, get_extra_info, pause_reading…) is the transport's
        return getattr(self._transport, name)


def _is_sized_head(data: bytes | bytearray | memoryview) -> bool:
    """A final response's status line and headers with a Content-Length, nothing after."""
    head = bytes(data[:12])
    return (
        head.startswith(b"HTTP/1.1 ")
        and not head.startswith(b"HTTP/1.1 1")
        and data[-4:] == b"\r\n\r\n"
        and b"\r\ncontent-length: " in data
    )


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a transport that sends each answer in one write."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_OneWritePerAnswer(transport))  # type: ignore[arg-type]
