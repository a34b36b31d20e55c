"""Fixtures for appointments: the payments tests' fake Stripe and the push tests' fake FCM (both
at the HTTP boundary)."""

from notifications.tests.conftest import enqueued, fake_fcm
from payments.tests.conftest import deliver, fake_stripe_server, stripe_fake

__all__ = ["deliver", "enqueued", "fake_fcm", "fake_stripe_server", "stripe_fake"]
