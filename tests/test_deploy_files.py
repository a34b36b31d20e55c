"""Deployment files checked by the real tools (issue 21): Prometheus' promtool (Debian package
``prometheus``: config, rules, rule unit tests, metric lint) and a real Compose implementation
(Debian's ``docker-compose config``), and every metric the alerts and the Grafana dashboard
use is one core/metrics.py defines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "healthchat.json"
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, (
        f"{name} is missing: `make ops-tools` installs it (Debian packages prometheus, docker-compose)"
    )
    return path


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_checks_config_rules_and_rule_tests(tmp_path):
    for path in PROMETHEUS.glob("*.yml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "metrics_token").write_text("placeholder")  # written from METRICS_TOKEN at start
    promtool = tool("promtool")
    assert "SUCCESS" in run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert "SUCCESS" in run(promtool, "check", "rules", str(tmp_path / "alerts.yml"))
    assert "SUCCESS" in run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)


def test_every_alert_has_a_rule_test_where_it_fires():
    """Each alert of alerts.yml is expected to fire in at least one case of alerts_test.yml (the
    promtool run above checks the cases hold)."""
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    firing = {
        case["alertname"] for test in cases for case in test["alert_rule_test"] if case.get("exp_alerts")
    }
    assert alerts - firing == set()


def test_promtool_lints_the_exposition():
    done = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=generate_latest(), capture_output=True, timeout=60
    )
    problems = [
        line for line in done.stdout.decode().splitlines() + done.stderr.decode().splitlines() if line
    ]
    assert done.returncode == 0, problems
    assert problems == []


@pytest.mark.parametrize("profile", [None, "monitoring"])
def test_compose_file_is_valid(tmp_path, profile):
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    env = {"PATH": "/usr/bin:/bin", "POSTGRES_PASSWORD": "x", "TURN_SECRET": "y", "METRICS_TOKEN": "z"}
    args = [tool("docker-compose"), *(["--profile", profile] if profile else []), "config"]
    config = yaml.safe_load(run(*args, cwd=tmp_path, env=env))
    services = set(config["services"])
    assert {"web", "worker", "beat", "postgres", "redis"} <= services
    # Compose 1.29's `config` lists every service; the profile keeps Prometheus out of `up`.
    assert config["services"]["prometheus"]["profiles"] == ["monitoring"]
    worker = config["services"]["worker"]["environment"]
    assert worker["METRICS_WORKER_PORT"] == "9808"


def defined_metrics() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("healthchat_"):
            names.add(family.name)
            names.update(family.name + suffix for suffix in SUFFIXES)
    return names


def used_metrics(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in re.findall(r"\bhealthchat_[a-z_]+", expr)}


def test_alerts_and_dashboard_use_defined_metrics():
    import core.metrics  # noqa: F401 - defines them

    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alert_exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert {rule["alert"] for group in rules["groups"] for rule in group["rules"]} == {
        "HealthchatSocketStorm",
        "HealthchatSendLatencyP99",
        "HealthchatCeleryQueueLag",
        "HealthchatWebhookFailures",
        "HealthchatRedisResubscribe",
    }
    dashboard = json.loads(DASHBOARD.read_text())
    panel_exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    defined = defined_metrics()
    assert used_metrics(alert_exprs) - defined == set()
    assert used_metrics(panel_exprs) - defined == set()
    # Every metric is on the dashboard.
    families = {f.name for f in REGISTRY.collect() if f.name.startswith("healthchat_")}
    shown = {name for name in families if any(name in expr for expr in panel_exprs)}
    assert families - shown == set()
