from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import selectors, services
from accounts.actors import Operator
from audit import actions, client
from audit import services as audit
from core.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Deactivate an account (sign-in refused, open sockets closed at once), or with --reactivate "
        "undo it; by phone number or user id."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="phone number (E.164) or user id")
        parser.add_argument("--reactivate", action="store_true", help="reactivate instead")

    def handle(self, *args: Any, **options: Any) -> None:
        active = bool(options["reactivate"])
        try:
            user = selectors.user_get_by_phone_or_id(ref=options["user"])
            services.user_set_active(user=user, active=active, actor=Operator(command="deactivate_user"))
            action = actions.USER_REACTIVATE if active else actions.USER_DEACTIVATE
            audit.record(action, client=client.COMMAND, object_type="user", object_id=user.pk)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(self.style.SUCCESS(f"user {user.pk} {'reactivated' if active else 'deactivated'}"))
