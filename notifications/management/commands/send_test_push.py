from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import selectors as account_selectors
from core.errors import ApplicationError
from notifications import services, tasks


class Command(BaseCommand):
    help = "Send a test push to every device of a user (by phone number or id) and show the outcome."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="phone number (E.164) or user id")
        parser.add_argument(
            "--queue",
            action="store_true",
            help="hand the push to the Celery workers instead of sending from this process",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = account_selectors.user_get_by_phone_or_id(ref=options["user"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        ids = services.push_test_create(user=user)
        if not ids:
            raise CommandError(f"user {user.pk} has no device with a push token")
        if options["queue"]:
            tasks.push_deliver.apply_async(args=(ids,))
            self.stdout.write(f"queued {len(ids)} test push(es) for user {user.pk}: deliveries {ids}")
            return
        report = services.push_deliver(delivery_ids=ids, ignore_due=True)
        for pk in ids:
            if pk in report.sent:
                self.stdout.write(self.style.SUCCESS(f"delivery {pk}: sent"))
            elif pk in report.retrying:
                self.stdout.write(self.style.WARNING(f"delivery {pk}: temporary failure, will retry"))
            else:
                reason = report.failed.get(pk) or report.skipped.get(pk) or "not processed"
                self.stdout.write(self.style.ERROR(f"delivery {pk}: {reason}"))
        if report.retrying:
            tasks.push_deliver.apply_async(args=(report.retrying,), countdown=report.retry_in or 0)
        if not report.sent:
            raise CommandError("no test push was accepted")
