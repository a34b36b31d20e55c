"""No usable credential in any line a server logs (trust finding 11).

A real server (uvicorn with its access log on and every logger at debug, and ``manage.py
runserver``) writes all of its output to one file; the test downloads attachments through
their signed links (as sent, with the colons percent-encoded, under a percent-encoded
parameter name, and on the wrong attachment), opens sockets whose URL carries a Firebase ID
token, then searches every line for each credential and for its signature alone: zero hits.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from PIL import Image

from accounts.tests.factories import PatientFactory
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module", params=["uvicorn", "runserver"])
def server(request, live_server_factory, tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    env = {"MEDIA_ROOT": str(media), "LOG_LEVEL": "DEBUG"}
    if request.param == "runserver":
        return live_server_factory(env, runserver=True)
    return live_server_factory(env, access_log=True)


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (20, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


def signature(credential: str) -> str:
    """The part that makes a credential usable: a JWT's or a Django signed value's signature."""
    return credential.replace(":", ".").rsplit(".", 1)[-1]


def link(server: Any, headers: dict[str, str], attachment_id: int) -> dict[str, Any]:
    """The download links, once the thumbnail (made after the upload commits) exists."""
    deadline = time.monotonic() + 20
    while True:
        answer = requests.get(
            f"{server.base_url}/api/v1/attachments/{attachment_id}", headers=headers, timeout=10
        )
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        if data["thumbnail_url"] or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def test_no_credential_in_any_server_log_line(server, make_token):
    patient = PatientFactory()
    firebase_token = make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)
    headers = {"Authorization": f"Bearer {firebase_token}"}
    uploaded = requests.post(
        f"{server.base_url}/api/v1/attachments",
        files={"file": ("scan.jpg", jpeg(), "image/jpeg")},
        headers=headers,
        timeout=10,
    )
    assert uploaded.status_code == 201, uploaded.text
    attachment_id = uploaded.json()["id"]
    data = link(server, headers, attachment_id)
    assert data["thumbnail_url"], "the thumbnail was never made"

    credentials = [firebase_token]
    for url in (data["url"], data["thumbnail_url"]):
        parts = urlsplit(url)
        assert parts.query.startswith("token=")
        token = parts.query.removeprefix("token=")
        credentials.append(token)
        base = f"{server.base_url}{parts.path}"
        # As sent; with the value's colons percent-encoded; under a percent-encoded name.
        for query in (f"token={token}", f"token={quote(token, safe='')}", f"%74oken={token}"):
            got = requests.get(f"{base}?{query}", timeout=10)
            assert got.status_code == 200, (query, got.text)
            assert got.content
        other = base.replace(f"/attachments/{attachment_id}/", f"/attachments/{attachment_id + 1000}/")
        refused = requests.get(f"{other}?token={token}", timeout=10)
        assert refused.status_code in (403, 404)

    async def sockets() -> None:
        # A client that puts its ID token in the socket's URL (the documented way is the header
        # or the auth frame): the server must not write that URL down either.
        authenticated = await WsClient.connect(f"{server.ws_url}?token={firebase_token}", firebase_token)
        await authenticated.close()
        anonymous = await WsClient.connect(f"{server.ws_url}?access_token={firebase_token}")
        await anonymous.close()

    asyncio.run(sockets())
    time.sleep(0.5)  # let the server finish writing the last lines
    server.stop()

    log = server.log_path.read_text(errors="replace")
    # The access lines are there (so the search below looks at them) ...
    assert f"/api/v1/attachments/{attachment_id}/content?" in log, log[-3000:]
    assert "/ws/v1/" in log, log[-3000:]
    # ... and no credential, nor the signature that makes one usable, is in any line.
    leaks = [
        line
        for line in log.splitlines()
        for credential in credentials
        if credential in line or signature(credential) in line
    ]
    assert leaks == [], "\n".join(leaks[:10])
