"""Every project app's tests run: pytest's ``testpaths`` (pyproject.toml, what ``make test`` and CI
collect) names each installed app of this repository that has a ``tests`` package. An app left out
(as ``scheduled`` once was) would have its tests silently never run."""

from __future__ import annotations

import tomllib
from pathlib import Path

from django.apps import apps

ROOT = Path(__file__).resolve().parent.parent


def _testpaths() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["tool"]["pytest"]["ini_options"]["testpaths"])


def project_apps_with_tests() -> list[str]:
    """The installed apps that live in this repository and have a ``tests`` package, as paths
    relative to the repository (what ``testpaths`` lists)."""
    found = []
    for config in apps.get_app_configs():
        path = Path(config.path).resolve()
        if not path.is_relative_to(ROOT) or ".venv" in path.parts:
            continue
        if (path / "tests" / "__init__.py").is_file():
            found.append(path.relative_to(ROOT).as_posix())
    return sorted(found)


def test_the_finder_sees_the_project_apps_and_not_the_libraries() -> None:
    found = project_apps_with_tests()
    assert {"messaging", "scheduled", "appointments"} <= set(found)
    assert not {"rest_framework", "channels", "django/contrib/admin"} & set(found)


def test_every_project_app_with_tests_is_in_testpaths() -> None:
    testpaths = set(_testpaths())
    missing = [app for app in project_apps_with_tests() if app not in testpaths]
    assert not missing, f"add {missing} to [tool.pytest.ini_options] testpaths in pyproject.toml"


def test_every_testpath_exists() -> None:
    assert [p for p in _testpaths() if not (ROOT / p).is_dir()] == []
