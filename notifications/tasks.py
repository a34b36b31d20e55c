"""Celery tasks for push: take ids, call a service, idempotent (the outbox rows record outcomes).

``acks_late`` with ``reject_on_worker_lost``: a task whose worker dies is delivered again; the
outbox row states make the second run send only what the first did not.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import services


@shared_task(
    bind=True,
    name="notifications.tasks.push_deliver",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # the rows count attempts (PUSH_MAX_ATTEMPTS) and give up themselves
    ignore_result=True,
)
def push_deliver(self: Any, delivery_ids: list[int]) -> dict[str, int]:
    report = services.push_deliver(delivery_ids=list(delivery_ids), ignore_due=bool(self.request.is_eager))
    if report.retry_in is not None and not self.request.is_eager:
        raise self.retry(countdown=report.retry_in)
    if report.retrying and self.request.is_eager:
        # Eager (no broker): retry at once; the rows' attempt count ends it.
        return push_deliver.apply(args=(report.retrying,)).get()
    return {"sent": len(report.sent), "skipped": len(report.skipped), "failed": len(report.failed)}


@shared_task(name="notifications.tasks.push_requeue", acks_late=True, ignore_result=True)
def push_requeue() -> int:
    return services.push_requeue()


@shared_task(name="notifications.tasks.push_cleanup", acks_late=True, ignore_result=True)
def push_cleanup() -> int:
    return services.push_cleanup()
