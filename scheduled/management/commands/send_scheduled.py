from typing import Any

from django.core.management.base import BaseCommand

from scheduled import dispatch


class Command(BaseCommand):
    help = (
        "Send every due scheduled message once (what the beat's sweep does; for a deployment "
        "without a Celery beat, e.g. the embedded `make run`, run it from cron)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        counts = dispatch.scheduled_dispatch_due()
        self.stdout.write(", ".join(f"{name}: {count}" for name, count in counts.items()))
