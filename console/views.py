"""The doctor web console (issue 19): one HTML page; everything else is static ES modules that
talk to the server only through the JavaScript SDK (``clients/js/src``, served as static files
under ``console/sdk/``). The page carries its own Content-Security-Policy: scripts from this
origin only, plus the hash of the page's import map (an inline ``<script type="importmap">``
is script for CSP, and browsers load import maps only inline)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET

VENDOR = "console/vendor/"
RECAPTCHA_SCRIPTS = "https://www.google.com/recaptcha/"
RECAPTCHA_STATIC = "https://www.gstatic.com/recaptcha/"


def import_map() -> str:
    """Bare module names the SDK and the console import, resolved to the shipped files."""
    static = settings.STATIC_URL if settings.STATIC_URL.startswith("/") else "/" + settings.STATIC_URL
    imports = {
        "openapi-fetch": f"{static}{VENDOR}openapi-fetch.js",
        "firebase-auth": f"{static}{VENDOR}firebase-auth.js",
        "@healthchat/client": f"{static}console/sdk/index.js",
    }
    return json.dumps({"imports": imports}, indent=1, sort_keys=True)


def page_config() -> dict[str, Any]:
    """What the page's scripts need to know (a non-executable JSON data block): the Firebase
    web configuration for the phone sign-in, and whether development tokens are accepted."""
    emulator = settings.FIREBASE_AUTH_EMULATOR_HOST
    return {
        "firebase": {
            "apiKey": settings.FIREBASE_WEB_API_KEY or ("emulator" if emulator else ""),
            "authDomain": settings.FIREBASE_WEB_AUTH_DOMAIN,
            "projectId": settings.FIREBASE_PROJECT_ID,
            "emulatorUrl": f"http://{emulator}" if emulator else "",
        },
        "devTokens": bool(settings.FIREBASE_DEV_TOKENS),
    }


def content_security_policy(script_hash: str) -> str:
    connect = ["'self'"]
    emulator = settings.FIREBASE_AUTH_EMULATOR_HOST
    if emulator:
        connect.append(f"http://{emulator}")
    scripts = ["'self'", f"'{script_hash}'"]
    frames = ["'none'"]
    if settings.FIREBASE_WEB_API_KEY:
        # Real (not emulated) phone sign-in: Firebase's reCAPTCHA check and its token endpoints.
        connect += ["https://identitytoolkit.googleapis.com", "https://securetoken.googleapis.com"]
        scripts += [RECAPTCHA_SCRIPTS, RECAPTCHA_STATIC]
        frames = [RECAPTCHA_SCRIPTS, RECAPTCHA_STATIC]
    return (
        f"default-src 'self'; script-src {' '.join(scripts)}; style-src 'self'; "
        "img-src 'self' blob: data:; media-src 'self' blob:; font-src 'self'; "
        f"connect-src {' '.join(connect)}; frame-src {' '.join(frames)}; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


@require_GET
def console_page(request: HttpRequest) -> HttpResponse:
    imports = import_map()
    digest = base64.b64encode(hashlib.sha256(imports.encode()).digest()).decode()
    html = render_to_string(
        "console/index.html", {"import_map": imports, "config": page_config()}, request=request
    )
    response = HttpResponse(html)
    response["Content-Security-Policy"] = content_security_policy(f"sha256-{digest}")
    response["Cache-Control"] = "no-store"
    return response
