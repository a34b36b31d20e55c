"""Canary helpers: look for a marker the server must never see, in every encoding it could be
stored in, through a dump of the database (used by the libsignal canary tests and the SDK's
end-to-end encryption test)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from typing import Any

from django.db import connection


def encodings(marker: bytes) -> set[bytes]:
    """The marker as raw bytes, hex (both cases) and base64 / URL-safe base64 at every byte
    alignment (the stable middle of the encoding, whatever precedes it)."""
    found = {marker, marker.hex().encode(), marker.hex().upper().encode()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + marker)
        start = -(-shift * 4 // 3)  # skip the characters that depend on the prefix
        middle = encoded[start + (1 if shift else 0) : -4]
        found.add(middle)
        found.add(middle.replace(b"+", b"-").replace(b"/", b"_"))
    return {e for e in found if len(e) >= 16}


def redis_dump(url: str) -> bytes:
    import redis

    client: Any = redis.Redis.from_url(url)
    values: list[Any] = []
    for key in client.scan_iter(count=1000):
        values.append(key)
        kind = client.type(key)
        if kind == b"string":
            values.append(client.get(key))
        elif kind == b"list":
            values.extend(client.lrange(key, 0, -1))
        elif kind == b"hash":
            values.extend(b"%s=%s" % item for item in client.hgetall(key).items())
        elif kind == b"set":
            values.extend(client.smembers(key))
        elif kind == b"zset":
            values.extend(client.zrange(key, 0, -1))
        elif kind == b"stream":
            values.append(repr(client.xrange(key)).encode())
    return b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in values)


def database_dump() -> bytes:
    db = connection.settings_dict
    if shutil.which("pg_dump"):
        return subprocess.run(
            ["pg_dump", "-h", db["HOST"], "-p", str(db["PORT"]), "-U", db["USER"], "-d", db["NAME"]],
            check=True,
            capture_output=True,
            timeout=120,
        ).stdout
    chunks: list[bytes] = []  # no pg_dump: COPY every table out (what a data dump holds)
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            with cursor.copy(f'COPY "{table}" TO STDOUT') as copy:
                chunks.extend(bytes(data) for data in copy)
    return b"".join(chunks)
