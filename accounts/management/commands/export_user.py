import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import selectors, services
from audit import actions, client
from audit import services as audit
from core.errors import ApplicationError


class Command(BaseCommand):
    help = "Print everything held about a user as JSON, by phone number or id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="phone number (E.164) or user id")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = selectors.user_get_by_phone_or_id(ref=options["user"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        data = services.user_export(user=user)
        audit.record(actions.USER_EXPORT, client=client.COMMAND, object_type="user", object_id=user.pk)
        self.stdout.write(json.dumps(data, indent=2, default=str))
