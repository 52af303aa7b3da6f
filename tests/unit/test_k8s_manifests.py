"""deploy/k8s/ holds together: labels, selectors, names, ports, the CLI flags it passes.

No Kubernetes API server exists where these tests run, so `kubectl apply --dry-run=server` and
kubeconform (which needs the schemas from the network) could not be run: these are structural
checks on the parsed YAML, and the commands are parsed by fedrun's own CLI parser.
"""

from pathlib import Path
from typing import Any

import yaml

from cluster import backend_options
from fedrun.cli import build_parser
from fedrun.config import RunConfig, chosen_flags, flag_values, resolve

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
NAMESPACED = {"Service", "StatefulSet", "Job", "NetworkPolicy"}


def _documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in _documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked here"
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def _worker_labels() -> dict[str, str]:
    return _one("StatefulSet")["spec"]["template"]["metadata"]["labels"]


def _coordinator_labels() -> dict[str, str]:
    return _one("Job")["spec"]["template"]["metadata"]["labels"]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _coordinator_config() -> RunConfig:
    args = build_parser().parse_args(_container(_one("Job"))["args"])  # exits on an unknown flag
    assert args.command == "run"
    return resolve(flag_values(chosen_flags(args)))


def test_every_object_parses_and_lives_in_the_fedrun_namespace() -> None:
    documents = _documents()

    assert {d["kind"] for d in documents} == {"Namespace", *NAMESPACED}
    namespace = _one("Namespace")["metadata"]["name"]
    for document in documents:
        assert document["apiVersion"] and document["metadata"]["name"]
        if document["kind"] in NAMESPACED:
            assert document["metadata"]["namespace"] == namespace, document["metadata"]["name"]


def test_worker_pods_run_fedrun_worker_behind_a_headless_service() -> None:
    workers, service = _one("StatefulSet"), _one("Service")
    container = _container(workers)
    port = container["ports"][0]["containerPort"]

    args = build_parser().parse_args(container["args"])
    assert args.command == "worker" and args.port == port
    assert workers["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert _selects({"matchLabels": service["spec"]["selector"]}, _worker_labels())
    assert not _selects({"matchLabels": service["spec"]["selector"]}, _coordinator_labels())
    assert _selects(workers["spec"]["selector"], _worker_labels())
    assert service["spec"]["ports"][0]["port"] == port
    assert container["readinessProbe"]["tcpSocket"]["port"] == port
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert workers["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_coordinator_job_dials_exactly_the_stateful_set_pods() -> None:
    workers, service = _one("StatefulSet"), _one("Service")
    namespace = _one("Namespace")["metadata"]["name"]
    name, replicas = workers["metadata"]["name"], workers["spec"]["replicas"]
    port = service["spec"]["ports"][0]["port"]

    config = _coordinator_config()

    assert config.workers.backend == "static" and config.workers.allow_remote
    assert config.workers.count == replicas
    assert list(config.workers.address_list) == [
        f"{name}-{index}.{service['metadata']['name']}.{namespace}.svc.cluster.local:{port}"
        for index in range(replicas)
    ]
    options = backend_options(config.cluster, Path("/data/run/workers"))
    assert options.addresses == config.workers.address_list


def test_coordinator_uses_the_worker_image_and_writes_results_to_a_volume() -> None:
    job = _one("Job")
    container = _container(job)
    config = _coordinator_config()

    assert container["image"] == _container(_one("StatefulSet"))["image"]
    mounts = {m["name"]: Path(m["mountPath"]) for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    holding = [name for name, path in mounts.items() if config.output.dir.is_relative_to(path)]
    assert holding, f"--out {config.output.dir} is on no mounted volume"
    assert {"emptyDir", "persistentVolumeClaim"} & set(volumes[holding[0]])
    assert config.observe.metrics_host == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"] == [
        config.observe.metrics_port
    ]


def test_namespace_denies_all_traffic_by_default() -> None:
    deny = _one("NetworkPolicy", "default-deny")

    assert deny["spec"]["podSelector"] == {}
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]


def _ingress_rules_for(labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        rule
        for policy in _documents()
        if policy["kind"] == "NetworkPolicy" and _selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get("ingress", [])
    ]


def test_workers_accept_only_the_coordinator_and_only_on_the_executor_port() -> None:
    port = _container(_one("StatefulSet"))["ports"][0]["containerPort"]
    rules = _ingress_rules_for(_worker_labels())

    assert rules, "no policy admits the coordinator to the workers"
    for rule in rules:
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, "only pods of this namespace, chosen by label"
            assert _selects(peer["podSelector"], _coordinator_labels())
            assert not _selects(peer["podSelector"], _worker_labels())


def test_coordinator_metrics_accept_only_prometheus() -> None:
    config = _coordinator_config()
    rules = _ingress_rules_for(_coordinator_labels())

    assert rules
    for rule in rules:
        assert rule["ports"] == [{"protocol": "TCP", "port": config.observe.metrics_port}]
        for peer in rule["from"]:
            assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}


def test_workers_may_reach_nothing() -> None:
    egress = [
        policy
        for policy in _documents()
        if policy["kind"] == "NetworkPolicy"
        and _selects(policy["spec"]["podSelector"], _worker_labels())
        and policy["spec"].get("egress")
    ]

    assert egress == []
