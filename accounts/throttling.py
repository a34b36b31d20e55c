"""Throttles that know our callers: keyed by the Firebase uid, which registrants have too."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

from .firebase import VerifiedToken


class FirebaseScopedRateThrottle(ScopedRateThrottle):
    """``ScopedRateThrottle`` keyed by the caller's Firebase uid.

    DRF keys authenticated callers by ``user.pk``, which a registrant does not have yet: every
    registrant would share one bucket (``throttle_register_None``) and a handful of sign-ups
    would lock registration for everyone. The uid is the same before and after registering.
    """

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        uid = request.auth.uid if isinstance(request.auth, VerifiedToken) else None
        if uid:
            return self.cache_format % {"scope": self.scope, "ident": f"firebase:{uid}"}
        return super().get_cache_key(request, view)

    def get_rate(self) -> str | None:
        """The rate from the current settings (DRF reads them once, when it is imported)."""
        from rest_framework.settings import api_settings

        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope or "")
        return str(rate) if rate is not None else None
