"""Signals of the shared library, for the apps that plug into it (core imports no app)."""

from __future__ import annotations

from django.dispatch import Signal

#: A REST request was answered 401, 403 or 404 by ``api_exception_handler``. Keyword arguments:
#: ``exc`` (the exception), ``context`` (DRF's view context), ``response`` (the rendered error).
#: The audit app records it (audit/receivers.py).
api_refused = Signal()
