"""Many concurrent REST requests from one process, with little client CPU per request.

A bare HTTP/1.1 client on asyncio streams (keep-alive, ``Content-Length`` or chunked bodies):
on a 2-core machine a heavier client (httpx, requests in threads) would take the CPU the servers
under test need. ``tests/test_db_connections_live.py`` and ``bench/rest.py`` drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    url: str  # http://host:port/path
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Result:
    status: int  # 0: no answer (the connection failed or closed)
    body: bytes
    headers: dict[str, str]
    seconds: float
    error: str = ""


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()  # the empty trailer line
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readline()
    return await reader.read()  # until the server closes


class _Connection:
    def __init__(self) -> None:
        self.target: tuple[str, int] | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = self.target = None

    async def get(self, request: Request, timeout: float) -> Result:
        parts = urlsplit(request.url)
        target = (parts.hostname or "127.0.0.1", parts.port or 80)
        started = time.monotonic()
        try:
            if self.target != target or self.writer is None or self.writer.is_closing():
                await self.close()
                self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(*target), timeout)
                self.target = target
            assert self.reader is not None
            assert self.writer is not None
            lines = [
                f"GET {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
                f"Host: {parts.netloc}",
            ]
            lines += [f"{name}: {value}" for name, value in request.headers]
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in header_lines:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await asyncio.wait_for(_read_body(self.reader, headers), timeout)
            if headers.get("connection", "").lower() == "close":
                await self.close()
            return Result(int(status_line.split()[1]), body, headers, time.monotonic() - started)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ) as exc:
            await self.close()
            return Result(0, b"", {}, time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")


async def run(requests: Sequence[Request], concurrency: int, timeout: float = 60.0) -> list[Result]:
    """Every request, ``concurrency`` at a time (each slot one keep-alive connection); the
    results in the requests' order."""
    results: list[Result | None] = [None] * len(requests)
    position = 0

    async def slot() -> None:
        nonlocal position
        conn = _Connection()
        try:
            while position < len(requests):
                index, position = position, position + 1
                results[index] = await conn.get(requests[index], timeout)
        finally:
            await conn.close()

    await asyncio.gather(*(slot() for _ in range(min(concurrency, len(requests)))))
    return [r for r in results if r is not None]
