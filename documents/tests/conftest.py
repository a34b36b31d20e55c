"""Fixtures for documents: files on a temporary disk, consultations through the real services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Path:
    root = tmp_path / "media"
    settings.MEDIA_ROOT = str(root)
    settings.PAYMENTS_PROVIDER = "development"
    settings.HEALTHCHAT_PLATFORM_LEGAL_NAME = "Healthchat Test Ltd"
    settings.HEALTHCHAT_PLATFORM_ADDRESS = "1 Test Street; London EC1A 1AA; United Kingdom"
    settings.HEALTHCHAT_TAX_ID = "GB123456789"
    settings.HEALTHCHAT_TAX_NAME = "VAT"
    settings.HEALTHCHAT_TAX_RATE = "20"
    settings.HEALTHCHAT_PUBLIC_URL = "https://healthchat.test"
    return root
