"""Run uvicorn (or ``manage.py ...``) for live tests, with Google's Firebase certificate URL
answered locally.

firebase-admin still fetches the certificates over its real HTTP stack and verifies real RS256
signatures; only the certificate document comes from the test's throwaway key.

``HC_TEST_ASGI_APP`` (``module:attribute``) serves a test's application instead of the project's.
"""

import os
import re
import socket
import sys

import responses

CERT_URL = "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"


def main() -> None:
    mock = responses.RequestsMock(assert_all_requests_are_fired=False)
    mock.add(
        responses.GET, CERT_URL, body=os.environ["HC_TEST_FIREBASE_CERTS"], content_type="application/json"
    )
    mock.add_passthru(re.compile(r"https?://(127\.0\.0\.1|localhost)(:\d+)?/.*"))
    mock.start()
    args = sys.argv[1:]
    if args[:1] == ["manage.py"]:
        from django.core.management import execute_from_command_line

        sys.path.insert(0, os.getcwd())  # the project, as ``python manage.py`` would have it
        execute_from_command_line(args)
        return
    import uvicorn

    app = os.environ.get("HC_TEST_ASGI_APP")
    if app:  # a test's own application module (e.g. tests/socket_fault.py) in place of the project's
        args = [app if arg == "healthchat.asgi:application" else arg for arg in args]
    if os.environ.get("HC_REUSE_PORT") == "1":
        # Several server processes behind one port: each binds it with SO_REUSEPORT and the
        # kernel spreads new connections over them (uvicorn serves the inherited socket).
        host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
        for flag in ("--host", "--port"):
            at = args.index(flag)
            del args[at : at + 2]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
        args += ["--fd", str(sock.fileno())]
    sys.argv = ["uvicorn", *args]
    uvicorn.main()


if __name__ == "__main__":
    main()
