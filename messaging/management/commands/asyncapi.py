from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from messaging import asyncapi


class Command(BaseCommand):
    help = "Generate docs/asyncapi.yaml (the WebSocket contract) from the frame models, or check it."

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--write", action="store_true", help="write docs/asyncapi.yaml")
        mode.add_argument("--check", action="store_true", help="fail when docs/asyncapi.yaml is stale")

    def handle(self, *args: Any, **options: Any) -> None:
        text = asyncapi.render()
        if options["write"]:
            asyncapi.DOCUMENT.write_text(text, encoding="utf-8")
            self.stdout.write(self.style.SUCCESS(f"wrote {asyncapi.DOCUMENT}"))
        elif options["check"]:
            current = asyncapi.DOCUMENT.read_text(encoding="utf-8") if asyncapi.DOCUMENT.exists() else ""
            if current != text:
                raise CommandError(f"{asyncapi.DOCUMENT} is stale: run `{asyncapi.REGENERATE}`")
            self.stdout.write("docs/asyncapi.yaml is up to date")
        else:
            self.stdout.write(text, ending="")
