"""The server's ASGI application with one socket operation broken, for the error-tracking test
(``tests/test_socket_sentry_live.py``): served instead of ``healthchat.asgi:application`` when
``tests/live_boot.py`` finds ``HC_TEST_ASGI_APP=tests.socket_fault:application``. Test code only:
production has no frame or setting that makes a handler fail on purpose.

``message.edit``'s service raises the way a database error does, quoting the row it could not
write (the new text and the author's phone number), so the report shows what reaches Sentry
when a real handler fails with a message that holds a client's data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from healthchat.asgi import application  # sets Django up: import the project after it
from messaging import services

if TYPE_CHECKING:
    from accounts.models import User

__all__ = ["application"]


class FailingRowError(RuntimeError):
    """What the broken service raises (its message quotes the data, as psycopg's DETAIL does)."""


def broken_message_edit(*, user: User, message_id: int, body: str) -> NoReturn:
    raise FailingRowError(
        f"new row for message {message_id} violates a check constraint: "
        f'failing row contains ("{body}", {user.phone_number})'
    )


services.message_edit = broken_message_edit
