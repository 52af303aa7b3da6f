"""deploy/: the Grafana dashboard asks only for metrics fedrun exports, and the Prometheus config is valid."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from fedrun.observe.prometheus import PrometheusMetrics

DEPLOY = Path(__file__).parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "fedrun-dashboard.json"
PROMETHEUS_CONFIG = DEPLOY / "prometheus.yml"
K8S_MARKER = "  # --- kubernetes example ---\n"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus provides it)"
)

# Grafana variables, replaced by values Prometheus accepts.
GRAFANA_VARIABLES = {"$window": "5m", "$job": "fedrun"}


def exported_series() -> dict[str, str]:
    """Every series name the observer can export, mapped to its metric family."""
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    families = registry.collect()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    return {f.name + suffix: f.name for f in families for suffix in suffixes[f.type]}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_dashboard_asks_only_for_exported_metrics_and_shows_them_all():
    exported = exported_series()
    used = {name for expr in expressions() for name in re.findall(r"\bfedrun_[a-z0-9_]+", expr)}
    assert used and used <= set(exported), f"not exported: {sorted(used - set(exported))}"
    assert {exported[name] for name in used} == set(exported.values()), "a metric family has no panel"


def test_dashboard_has_grafana_shape():
    board = dashboard()
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert {"job", "window"} <= set(variables)
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        assert panel["type"] in {"timeseries", "stat"} and panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the dashboard"
        panel_cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not panel_cells & cells, f"{panel['title']} overlaps another panel"
        cells |= panel_cells
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(set(ref_ids)) == len(ref_ids)
        assert all(t["expr"].strip() for t in panel["targets"])
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)


def test_dashboard_has_the_panels_an_operator_needs():
    exprs = "\n".join(expressions())
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(fedrun_round_duration_seconds_bucket" in exprs
    assert "rate(fedrun_examples_trained_total" in exprs
    assert "fedrun_workers_alive" in exprs and "fedrun_worker_failures_total" in exprs


def test_prometheus_config_scrapes_the_coordinator():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["fedrun"]["static_configs"][0]["targets"] == ["localhost:9469"]
    assert jobs["fedrun-pushgateway"]["honor_labels"] is True
    assert K8S_MARKER in PROMETHEUS_CONFIG.read_text()


def uncommented_kubernetes_example(tmp_path: Path) -> Path:
    head, example = PROMETHEUS_CONFIG.read_text().split(K8S_MARKER)
    uncommented = tmp_path / "prometheus-k8s.yml"
    uncommented.write_text(head + example.replace("  # ", "  "))
    return uncommented


def test_kubernetes_example_is_a_scrape_job_once_uncommented(tmp_path):
    uncommented = uncommented_kubernetes_example(tmp_path)
    job = yaml.safe_load(uncommented.read_text())["scrape_configs"][-1]
    assert job["job_name"] == "fedrun-kubernetes"
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["fedrun"]}}]
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (apt-get install prometheus provides it)")
    result = promtool("check", "config", str(uncommented))
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        pytest.skip(
            "this promtool build has no Kubernetes service discovery (Debian's package leaves it out)"
        )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_accepts_the_prometheus_config():
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path):
    rules = []
    for number, expr in enumerate(expressions()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
