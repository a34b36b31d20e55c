"""Oversized uploads are refused by the ASGI guard before the body is read."""

import socket
import time

import pytest

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def server(live_server_factory):
    return live_server_factory(
        {
            "ATTACHMENT_MAX_IMAGE_BYTES": "1000",
            "ATTACHMENT_MAX_VIDEO_BYTES": "1000",
            "ATTACHMENT_MAX_AUDIO_BYTES": "1000",
            "ATTACHMENT_MAX_DOCUMENT_BYTES": "1000",
            "ATTACHMENT_MAX_ENCRYPTED_BYTES": "1000",
        }
    )


def raw_request(port: int, head: str, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode() + body)
        sock.settimeout(5)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_declared_oversized_body_is_refused_without_reading_it(server):
    started = time.monotonic()
    head = (
        "POST /api/v1/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        "Content-Length: 10737418240\r\nConnection: close\r\n\r\n"
    )
    response = raw_request(server.port, head)  # 10 GiB declared, nothing sent
    assert response.startswith(b"HTTP/1.1 413")
    assert b'"file_too_large"' in response
    assert time.monotonic() - started < 3


def test_chunked_oversized_body_is_cut_off(server):
    """Streamed without a length: the guard stops at the limit and answers 413 while the
    client is still sending (so the rest is never read)."""
    head = (
        "POST /api/v1/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"a" * 4096
    response = b""
    sent_chunks = 0
    reset = False
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        for _ in range(400):  # up to 1.6 MB offered
            try:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                reset = True
                break
            sent_chunks += 1
            time.sleep(0.005)
            try:
                response += sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                reset = True
                break
            if response:
                break
    # The server answered 413, or closed on us (a reset can swallow the 413 in flight); either
    # way it stopped reading long before the 1.6 MB were sent.
    assert response.startswith(b"HTTP/1.1 413") or (reset and not response), response[:200]
    assert sent_chunks < 400
