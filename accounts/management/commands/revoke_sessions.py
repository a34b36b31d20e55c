from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import selectors, services
from accounts.actors import Operator
from audit import actions, client
from audit import services as audit
from core.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Sign a user out everywhere: revoke their Firebase refresh tokens and close their open "
        "sockets; by phone number or user id."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="phone number (E.164) or user id")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = selectors.user_get_by_phone_or_id(ref=options["user"])
            services.revoke_sessions(user=user, actor=Operator(command="revoke_sessions"))
            audit.record(actions.USER_SIGNOUT, client=client.COMMAND, object_type="user", object_id=user.pk)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(self.style.SUCCESS(f"sessions of user {user.pk} revoked"))
