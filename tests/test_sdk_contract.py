"""The JavaScript SDK's generated files match the committed contracts, and the SDK type-checks.

clients/js/src/generated/ is produced by ``npm run generate`` (openapi-typescript over
docs/openapi.yaml; json-schema-to-typescript over docs/asyncapi.yaml's components/schemas, plus
the close codes, error codes and frame types as runtime constants). A contract change without a
regeneration fails here; so does SDK code that no longer fits the generated types (``tsc``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SDK = Path(__file__).resolve().parent.parent / "clients" / "js"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "Node 20+ is needed for the SDK checks"
    assert (SDK / "node_modules" / "typescript").is_dir(), "run `npm ci` in clients/js (make test does)"
    return subprocess.run([node, *args], cwd=SDK, capture_output=True, text=True, timeout=180, check=False)


def test_generated_files_are_current() -> None:
    result = run("scripts/generate.js", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    for name in ("openapi.d.ts", "frames.d.ts", "constants.js"):
        shutil.copy(SDK / "src" / "generated" / name, tmp_path / name)
    stale = tmp_path / "constants.js"
    stale.write_text(stale.read_text().replace("4429", "4430"))
    result = run("scripts/generate.js", "--check", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "constants.js" in result.stderr
    assert "frames.d.ts" not in result.stderr


def test_the_sdk_type_checks() -> None:
    result = run("node_modules/typescript/bin/tsc", "--noEmit", "-p", ".")
    assert result.returncode == 0, result.stdout + result.stderr
