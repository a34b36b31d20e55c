from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import selectors, services
from accounts.models import DoctorProfile
from healthchat.errors import ApplicationError


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
            services.doctor_set_verification(doctor=user, status=status, actor=None)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(self.style.SUCCESS(f"doctor {user.pk} is now {status}"))
