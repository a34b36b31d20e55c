import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import selectors, services
from healthchat.errors import ApplicationError


class Command(BaseCommand):
    help = "Print everything held about a user as JSON, by phone number or id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="phone number (E.164) or user id")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = selectors.user_get_by_phone_or_id(ref=options["user"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps(services.user_export(user=user), indent=2, default=str))
