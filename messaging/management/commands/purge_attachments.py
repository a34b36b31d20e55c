from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from messaging import services


class Command(BaseCommand):
    help = "Delete uploads that were never attached to a message (older than ATTACHMENT_ORPHAN_HOURS)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than-hours", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        count = services.attachments_purge_orphans(older_than_hours=options["older_than_hours"])
        self.stdout.write(self.style.SUCCESS(f"{count} orphaned upload(s) deleted"))
