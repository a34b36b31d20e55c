from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from messaging import search_index


class Command(BaseCommand):
    help = (
        "Rebuild the message search column for SEARCH_LANGUAGE (PostgreSQL; rewrites "
        "messaging_message under an exclusive lock). --check: only say whether it matches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="fail when the column is built for another language"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("message search uses PostgreSQL full-text search; this database has none")
        wanted = search_index.language()
        with connection.cursor() as cursor:
            if not search_index.config_exists(cursor, wanted):
                raise CommandError(f"PostgreSQL has no text search configuration {wanted!r}")
            current = search_index.current_config(cursor)
        if current == wanted:
            self.stdout.write(f"message search is built for {wanted}")
            return
        if options["check"]:
            raise CommandError(f"message search is built for {current}, SEARCH_LANGUAGE is {wanted}")
        with transaction.atomic(), connection.cursor() as cursor:
            for statement in [*search_index.drop_statements(), *search_index.add_statements(wanted)]:
                cursor.execute(statement)
        self.stdout.write(self.style.SUCCESS(f"message search rebuilt for {wanted} (was {current})"))
