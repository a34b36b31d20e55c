"""Throttles that know our callers: keyed by the Firebase uid, which registrants have too."""

from __future__ import annotations

from typing import Any

from django.utils.crypto import salted_hmac
from rest_framework.request import Request

from core.throttling import ScopedRateThrottle

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
            # A keyed digest, not the uid: Redis keys outlive an account's erasure.
            digest = salted_hmac("throttle-firebase-uid", uid, algorithm="sha256").hexdigest()[:32]
            return self.cache_format % {"scope": self.scope, "ident": f"firebase:{digest}"}
        return super().get_cache_key(request, view)
