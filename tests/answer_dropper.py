"""A loopback proxy that cuts the connection once the daemon has answered: the event is
stored, but the sender never sees the 202 (what idempotency keys are for)."""

from __future__ import annotations

import asyncio


class AnswerDropper:
    """A loopback proxy that passes a request to the daemon and, once the daemon starts to
    answer, cuts the sender's connection: the event is committed but the 202 never arrives."""

    def __init__(self, upstream_port: int, drop: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.drop = drop  # how many answers to cut (None: every one)
        self.answers_dropped = 0
        self.answers_passed = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> AnswerDropper:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def forward() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        pump = asyncio.create_task(forward())
        if self.drop is not None and self.answers_dropped >= self.drop:
            self.answers_passed += 1
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            pump.cancel()
            writer.close()
            up_writer.close()
            return
        answer = await up_reader.read(65536)  # the daemon answered: it has committed
        assert answer.startswith(b"HTTP/1.1 ")
        self.answers_dropped += 1
        pump.cancel()
        writer.transport.abort()  # the sender sees the connection drop, never the answer
        up_writer.close()
