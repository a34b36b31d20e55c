from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import selectors, services
from healthchat.errors import ApplicationError


class Command(BaseCommand):
    help = "Delete an account (Firebase user, tokens, devices, personal data), by phone or id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="phone number (E.164) or user id")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = selectors.user_get_by_phone_or_id(ref=options["user"])
            services.user_delete(user=user)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(self.style.SUCCESS(f"user {user.pk} deleted"))
