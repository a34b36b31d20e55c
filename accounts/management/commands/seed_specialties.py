import importlib
from typing import Any

from django.core.management.base import BaseCommand

from accounts import services

# The default list lives in the data migration that seeds it on a fresh database.
SPECIALTIES = importlib.import_module("accounts.migrations.0002_seed_specialties").SPECIALTIES


class Command(BaseCommand):
    help = "Create the default list of medical specialties again (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = services.seed_specialties(SPECIALTIES)
        self.stdout.write(self.style.SUCCESS(f"{created} specialties created"))
