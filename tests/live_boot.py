"""Run uvicorn for live tests, with Google's Firebase certificate URL answered locally.

firebase-admin still fetches the certificates over its real HTTP stack and verifies real RS256
signatures; only the certificate document comes from the test's throwaway key.
"""

import os
import re
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
    import uvicorn

    sys.argv = ["uvicorn", *sys.argv[1:]]
    uvicorn.main()


if __name__ == "__main__":
    main()
