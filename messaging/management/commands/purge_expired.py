from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from messaging import services


class Command(BaseCommand):
    help = (
        "Erase messages and files older than MESSAGE_RETENTION_DAYS / ATTACHMENT_RETENTION_DAYS, "
        "with the kept texts of those messages (edit history, unsent texts) "
        "(conversations under legal hold are skipped)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what is due; change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        days = f"messages {settings.MESSAGE_RETENTION_DAYS} days, attachments {settings.ATTACHMENT_RETENTION_DAYS} days"
        if options["dry_run"]:
            due = services.retention_due()
            self.stdout.write(
                f"dry run ({days}; 0 = kept): {due.messages} messages and {due.attachments} attachments due"
                f" ({due.versions} kept texts: edit history, unsent messages)"
            )
            return
        done = services.retention_purge()
        self.stdout.write(
            self.style.SUCCESS(
                f"erased {done.messages} messages and {done.attachments} attachments ({days});"
                f" {done.versions} kept texts"
            )
        )
