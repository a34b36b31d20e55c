"""Run a real Celery worker for live tests, with FCM's send URL answered by a local fake.

firebase-admin in the worker builds and sends its real HTTP requests; only the final hop to
``fcm.googleapis.com`` is forwarded to the fake server named by ``HC_TEST_FCM_FAKE``.
Usage: python notifications/tests/worker_boot.py -A healthchat worker [celery options]
"""

import os
import re
import sys

import requests
import responses

FCM_SEND = re.compile(r"https://fcm\.googleapis\.com/(v1/projects/[^/]+/messages:send)")


def forward(request):
    path = FCM_SEND.match(request.url).group(1)
    answer = requests.post(
        f"{os.environ['HC_TEST_FCM_FAKE']}/{path}",
        data=request.body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    return answer.status_code, {"Content-Type": "application/json"}, answer.content


def main() -> None:
    mock = responses.RequestsMock(assert_all_requests_are_fired=False)
    mock.add_callback(responses.POST, FCM_SEND, callback=forward)
    mock.add_passthru(re.compile(r"https?://(127\.0\.0\.1|localhost)(:\d+)?/.*"))
    mock.start()
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", *sys.argv[1:]]
    sys.exit(celery_main())


if __name__ == "__main__":
    main()
