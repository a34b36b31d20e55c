"""Re-record tests/contracts/session.jsonl: a live session (real uvicorn, PostgreSQL, Redis) in
which every frame type is sent both ways, checked against docs/asyncapi.yaml and written out.

Usage: python scripts/record_session.py   (with DATABASE_URL / REDIS_URL as for the tests)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = {**os.environ, "HC_RECORD_SESSION": "1"}
    test = "tests/test_contract_replay_live.py::test_live_session_matches_asyncapi"
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-n", "0", test], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
