from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import selectors, services
from accounts.actors import Operator
from accounts.models import DoctorProfile
from audit import actions, client
from audit import services as audit
from core.errors import ApplicationError


class Command(BaseCommand):
    help = "Verify (or with --reject, reject) a doctor, by phone number or user id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="phone number (E.164) or user id")
        parser.add_argument("--reject", action="store_true", help="reject instead of verify")

    def handle(self, *args: Any, **options: Any) -> None:
        status = (
            DoctorProfile.Verification.REJECTED if options["reject"] else DoctorProfile.Verification.VERIFIED
        )
        try:
            user = selectors.user_get_by_phone_or_id(ref=options["user"])
            services.doctor_set_verification(
                doctor=user, status=status, actor=Operator(command="verify_doctor")
            )
            action = actions.DOCTOR_REJECT if options["reject"] else actions.DOCTOR_VERIFY
            audit.record(action, client=client.COMMAND, object_type="user", object_id=user.pk)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(self.style.SUCCESS(f"doctor {user.pk} is now {status}"))
