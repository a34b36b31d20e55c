"""Content-Security-Policy on the pages a browser renders: the admin and the API docs.

Django 5.2 sets nosniff, X-Frame-Options, Referrer-Policy, Cross-Origin-Opener-Policy and (in
production) HSTS itself (``SecurityMiddleware``, ``XFrameOptionsMiddleware``); it has no CSP.
``HEALTHCHAT_CSP`` maps path prefixes to policies; the longest matching prefix wins, and a
response that already carries a policy keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


def policy_for(path: str) -> str | None:
    best: tuple[int, str] | None = None
    for prefix, policy in settings.HEALTHCHAT_CSP.items():
        if path.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), policy)
    return best[1] if best else None


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            policy = policy_for(request.path)
            if policy:
                response["Content-Security-Policy"] = policy
        return response
