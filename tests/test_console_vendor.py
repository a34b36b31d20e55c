"""The web console's vendored browser modules (console/static/console/vendor/) are what
`node scripts/vendor_console.mjs` builds from the locked npm packages: shipped build output a
reviewer can regenerate and compare (`make vendor-console`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_vendor_files_match_the_build() -> None:
    node = shutil.which("node")
    assert node, "Node 20+ is needed (make test installs the npm dependencies)"
    assert (ROOT / "node_modules" / "esbuild").is_dir(), "run `npm ci` in the repository root"
    result = subprocess.run(
        [node, "scripts/vendor_console.mjs", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and the check does fail on a stale copy (one test: it edits a committed file briefly)
    path = ROOT / "console" / "static" / "console" / "vendor" / "openapi-fetch.js"
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"// edited by hand\n")
        result = subprocess.run(
            [node, "scripts/vendor_console.mjs", "--check"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1
        assert "stale: console/static/console/vendor/openapi-fetch.js" in result.stderr
    finally:
        path.write_bytes(original)
