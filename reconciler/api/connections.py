"""Deadlines for what a client sends: a slow client cannot hold a connection.

uvicorn closes idle keep-alive connections, but over h11 it sets no deadline on a request
that has begun: a client that sends part of its headers, or part of a body, and then
trickles or waits, holds the connection (and, for a body, the handler waiting on it) for
as long as it likes. The deadline here is set on the whole phase, not on each read, so
sending one byte now and then does not extend it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("reconciler")

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 1000

# written by hand: h11 refuses to send a response to a request it has not parsed
_TIMED_OUT_BODY = b"the request was not sent in time; send it whole, without pauses\n"
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n"
    b"\r\n" % len(_TIMED_OUT_BODY)
) + _TIMED_OUT_BODY


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the headers and one on the body."""

    header_timeout = DEFAULT_HEADER_TIMEOUT
    body_timeout = DEFAULT_BODY_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def _follow(self) -> None:
        """Set the deadline of what the client is sending now, keeping one already running."""
        if self.transport is None or self.transport.is_closing():
            self._arm(None)
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            # between requests uvicorn's keep-alive timeout is the deadline; once bytes of
            # the next request came (they cancel it), the headers have to come in time
            self._arm(None if self.timeout_keep_alive_task is not None else "headers")
        elif state is h11.SEND_BODY:
            self._arm("body")
        else:
            # the request is in; the handler's time is not the client's
            self._arm(None)

    def _arm(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase is not None:
            seconds = self.header_timeout if phase == "headers" else self.body_timeout
            self._deadline = self.loop.call_later(seconds, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        phase, self._phase = self._phase, None
        if self.transport.is_closing():
            return
        if phase == "body" and self.flow.read_paused:
            # the handler has not taken what came: the client is waiting on us, not we on it
            self._arm("body")
            return
        log.warning(
            "closed a connection whose request did not come in time",
            extra={
                "fields": {
                    "client": f"{self.client[0]}:{self.client[1]}" if self.client else None,
                    "waitingFor": phase,
                    "timeoutSeconds": self.header_timeout if phase == "headers" else self.body_timeout,
                }
            },
        )
        # a handler that answered without reading the body has had its say; otherwise 408
        if phase == "headers" or (self.cycle is not None and not self.cycle.response_started):
            self.transport.write(_TIMED_OUT)
        self.transport.close()


def deadline_protocol(header_timeout: float, body_timeout: float) -> type[DeadlineProtocol]:
    """The protocol class uvicorn builds each connection with, carrying these deadlines."""
    return type(
        "DeadlineProtocol",
        (DeadlineProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
