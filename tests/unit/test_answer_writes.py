"""The transport under uvicorn's protocol: each sized answer leaves in one write, nothing
else is held (parcelhook/http_protocol.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from parcelhook.http_protocol import _OneWritePerAnswer

SIZED = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n"
CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Recording(asyncio.Transport):
    """What reached the socket, one entry per write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed


def test_a_sized_answer_leaves_in_one_write() -> None:
    sent = Recording()
    t = _OneWritePerAnswer(sent)
    t.write(SIZED)
    assert sent.writes == []
    t.write(b"{}")
    assert sent.writes == [SIZED + b"{}"]
    # and the next answer on the kept-alive connection likewise
    t.write(SIZED)
    t.write(b"[]")
    assert sent.writes == [SIZED + b"{}", SIZED + b"[]"]


def test_streamed_headers_and_interim_answers_go_at_once() -> None:
    # a client waiting on a stream sees its headers before the first chunk, and one that
    # sent "Expect: 100-continue" waits for the 100 before it sends its body
    sent = Recording()
    t = _OneWritePerAnswer(sent)
    t.write(CONTINUE)
    t.write(CHUNKED)
    assert sent.writes == [CONTINUE, CHUNKED]
    # a whole answer in one write (uvicorn's own 400s) is not held either
    whole = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nbad"
    t.write(whole)
    assert sent.writes[-1] == whole


def test_closing_sends_what_is_held_first() -> None:
    sent = Recording()
    t = _OneWritePerAnswer(sent)
    t.write(SIZED)
    t.close()
    assert sent.writes == [SIZED] and sent.closed
    other = Recording()
    t = _OneWritePerAnswer(other)
    t.write(SIZED)
    t.write_eof()
    assert other.writes == [SIZED] and other.eof


def test_everything_else_is_the_transports() -> None:
    sent = Recording()
    t = _OneWritePerAnswer(sent)
    assert not t.is_closing()
    sent.close()
    assert t.is_closing()
