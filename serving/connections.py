"""Connection guards that uvicorn lacks: a header deadline, a body deadline, a connection cap.

What uvicorn (h11 protocol) does on its own, and why it is not enough:
  * ``timeout_keep_alive`` is armed only after a response and cancelled by the first byte
    of the next request, so a client that connects and sends nothing, or sends its headers
    a byte at a time, or declares ``Content-Length: 1000`` and sends one byte a second,
    holds its connection for as long as it likes.
  * ``limit_concurrency`` answers 503 only once a request's headers are parsed: a client
    that never finishes its headers is never refused by it, yet counts against it, so a few
    such clients push every real client into 503s.
  * ``backlog`` is the length of the kernel's queue of connections not yet accepted; it
    caps nothing once a connection is accepted.

:class:`GuardedH11Protocol` is uvicorn's h11 protocol with two deadlines, driven by h11's
view of the client (``their_state``): while it is ``IDLE`` (a new connection, or between
keep-alive requests) the request's headers must be complete within
``serve.header_timeout_s``; once they are (``SEND_BODY``), the whole body must arrive
within ``serve.body_timeout_s``. A connection past its deadline is answered 408 when a
request had begun and nothing was answered yet, and closed; an idle connection is closed
quietly, as at the end of a keep-alive. A connection over ``serve.max_connections`` is
answered 503 at once, before it can send anything, and closed.

The app learns of a body timeout through the request scope (``scope["state"]["cut_off"]``)
and counts that request as 408 rather than as a client disconnect.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("cyclegan.serving")

HEADER_TIMEOUT, BODY_TIMEOUT, OVER_CAPACITY = "header_timeout", "body_timeout", "over_capacity"


def error_response(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 response with our ``{"error": ...}`` body that closes the connection."""
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines and a connection cap.

    The limits are class attributes: :func:`guarded_protocol` makes a subclass with the
    configured values, since uvicorn builds one protocol object per connection itself."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 256
    on_cut: Callable[[str], None] = staticmethod(lambda reason: None)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._phase: str | None = None          # "header" or "body" while a deadline runs
        self._deadline: asyncio.TimerHandle | None = None
        self._phase_started = 0.0
        self._phase_bytes = 0                   # bytes received in the header phase
        self._refused = False

    # -- connection lifetime -------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:  # this connection is in the set already
            self._refuse()
            return
        self._sync_deadline()

    def connection_lost(self, exc) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # read and drop, so closing sends a FIN after the 503, not a reset
            return
        if self._phase == "header":
            self._phase_bytes += len(data)
        super().data_received(data)
        self._sync_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start the next pipelined request
        if not self.transport.is_closing():
            self._sync_deadline()

    # -- deadlines ------------------------------------------------------------------------
    def _sync_deadline(self) -> None:
        """Arm the deadline of the phase h11 says the client is in; keep a running one."""
        state = self.conn.their_state
        phase = "header" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase:
            return
        self._cancel_deadline()
        self._phase, self._phase_started, self._phase_bytes = phase, time.monotonic(), 0
        if phase == "header":
            self._deadline = self.loop.call_later(self.header_timeout, self._header_timed_out)
        elif phase == "body":
            self._deadline = self.loop.call_later(self.body_timeout, self._body_timed_out)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _header_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._phase_bytes == 0:  # idle, nothing of a request yet: close as a keep-alive ends
            self.transport.close()
            return
        message = f"request headers not complete within serve.header_timeout_s ({self.header_timeout:g} s)"
        self.transport.write(error_response(408, "Request Timeout", message))
        self.transport.close()
        self._report(HEADER_TIMEOUT, received=self._phase_bytes)

    def _body_timed_out(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        message = f"request body not complete within serve.body_timeout_s ({self.body_timeout:g} s)"
        app_reading = not cycle.response_started
        if app_reading:
            # answer for the app, and end its wait with a disconnect; the mark makes it log
            # and count the request as this 408 (its one log line), not as a client disconnect
            self.transport.write(error_response(408, "Request Timeout", message))
            cycle.scope["state"]["cut_off"] = message
        cycle.disconnected = True        # the app's own reply, if any, is dropped
        cycle.message_event.set()
        self.transport.close()
        self._report(BODY_TIMEOUT, log_it=not app_reading, path=cycle.scope.get("path"))

    def _refuse(self) -> None:
        self._refused = True
        self.connections.discard(self)  # a refused connection holds no place, and no shutdown waits for it
        message = f"too many connections (serve.max_connections: {self.max_connections})"
        self.transport.write(error_response(503, "Service Unavailable", message))
        if self.transport.can_write_eof():
            # FIN after the answer; the client's request (if any) is read and dropped meanwhile,
            # so closing does not reset the answer away; a client that keeps the socket open is
            # dropped after the header deadline
            self.transport.write_eof()
            self.loop.call_later(self.header_timeout, self.transport.close)
        else:  # TLS has no half-close
            self.transport.close()
        self._report(OVER_CAPACITY)

    def _report(self, reason: str, log_it: bool = True, **fields) -> None:
        if log_it:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else None
            waited = 0.0 if reason == OVER_CAPACITY else round((time.monotonic() - self._phase_started) * 1000, 1)
            log.info("connection cut", extra={"fields": {"reason": reason, "client": client, "after_ms": waited,
                                                         **fields}})
        self.on_cut(reason)


def guarded_protocol(header_timeout: float, body_timeout: float, max_connections: int,
                     on_cut: Callable[[str], None] | None = None) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with these limits, for ``uvicorn.Config(http=...)``."""
    attrs = {"header_timeout": header_timeout, "body_timeout": body_timeout, "max_connections": max_connections}
    if on_cut is not None:
        attrs["on_cut"] = staticmethod(on_cut)
    return type("ConfiguredGuardedH11Protocol", (GuardedH11Protocol,), attrs)
