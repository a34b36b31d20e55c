from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import firebase, validators
from core.errors import ApplicationError


class Command(BaseCommand):
    help = "Development only: print an ID token for a phone number (needs FIREBASE_DEV_TOKENS)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("phone_number", help="e.g. +14155550100")
        parser.add_argument("--lifetime", type=int, default=3600, help="seconds (default 3600)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            # What Firebase would put in the token after its SMS check: a possible number.
            phone = validators.validate_verified_phone_number(options["phone_number"])
            self.stdout.write(firebase.mint_dev_token(phone, lifetime=options["lifetime"]))
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
