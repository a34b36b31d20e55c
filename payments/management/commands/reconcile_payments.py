"""Compare the ledger and consultation states with Stripe's PaymentIntents; report, or --fix.

Catches what missed webhooks leave behind: authorisations not marked paid, captures or
refunds missing from the ledger, PaymentIntents cancelled at Stripe, uncaptured
authorisations of ended consultations, and transfers still owed to doctors.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ApplicationError
from payments import selectors, services, webhooks
from payments.gateway import GatewayError, get_gateway


class Command(BaseCommand):
    help = "Compare payments with Stripe (list PaymentIntents) and report or fix differences."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=30, help="PaymentIntents created in the last N days")
        parser.add_argument("--fix", action="store_true", help="apply what is missing (as webhooks would)")

    def handle(self, *args: Any, **options: Any) -> None:
        gateway = get_gateway()
        if gateway.name != "stripe":
            self.stdout.write("development payment provider: nothing to reconcile")
            return
        since = int(time.time()) - int(options["days"]) * 86400
        fix = bool(options["fix"])
        seen = differences = 0
        try:
            for intent in gateway.list_payment_intents(created_gte=since):
                seen += 1
                for problem in webhooks.reconcile_payment_intent(intent=intent, fix=fix):
                    differences += 1
                    self.stdout.write(("FIXED " if fix else "DIFF ") + problem)
        except (GatewayError, ApplicationError) as exc:
            raise CommandError(f"Stripe could not be read: {exc}") from exc
        pending = selectors.consultation_ids_pending_payout()
        for consultation_id in pending:
            differences += 1
            if fix:
                try:
                    consultation = services.consultation_settle(
                        consultation_id=consultation_id, source="reconcile"
                    )
                    self.stdout.write(
                        f"FIXED consultation {consultation_id}: payout {consultation.payout_status}"
                    )
                except ApplicationError as exc:
                    self.stdout.write(
                        f"DIFF consultation {consultation_id}: payout still pending ({exc.message})"
                    )
            else:
                self.stdout.write(f"DIFF consultation {consultation_id}: doctor's share not transferred yet")
        self.stdout.write(
            f"checked {seen} payment intent(s): {differences} difference(s){' fixed' if fix else ''}"
        )
