"""Fixtures for appointments: the payments tests' fake Stripe (at the HTTP boundary)."""

from payments.tests.conftest import deliver, fake_stripe_server, stripe_fake

__all__ = ["deliver", "fake_stripe_server", "stripe_fake"]
