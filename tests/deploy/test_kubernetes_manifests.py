"""The Kubernetes manifests, checked offline: both kustomizations render with `kubectl kustomize`, every
object is valid against the schemas of a pinned Kubernetes version (kubernetes-validate, strict), and
what the deployment promises holds as data: probes, resources and a locked-down securityContext on
every pod, deny-by-default NetworkPolicies that still let each pod reach what it needs, Prometheus on
the metrics ports, TLS everywhere in production, Secret keys that the template has, PodDisruptionBudgets
that select real pods."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pytest
import yaml

from clinic.config import SERVICES

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
BASE = K8S / "base"
PRODUCTION = K8S / "overlays" / "production"
# The API version the manifests are held to: the kubectl client used here, and the oldest cluster
# deploy/README.md supports.
KUBERNETES_VERSION = "1.32.0"
METRICS_PORT = 9100
WEB_PORTS = {"scheduling": 8101, "sessions": 8102, "records": 8103, "notifications": 8104}


def render(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH: the manifests are rendered with `kubectl kustomize` (kubectl 1.27 or "
                    "newer, which carries kustomize v5); install it to run these checks")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [document for document in yaml.safe_load_all(done.stdout) if document]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(BASE)


@pytest.fixture(scope="module")
def production() -> list[dict]:
    return render(PRODUCTION)


@pytest.fixture(scope="module", params=["base", "production"])
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, request.getfixturevalue(request.param)


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [item for item in objects if item["kind"] == kind]


def named(objects: list[dict], kind: str, name: str) -> dict:
    found = [item for item in of_kind(objects, kind) if item["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def pods(objects: list[dict]) -> list[tuple[str, dict]]:
    """Every pod template: (Kind/name, template) for the Deployments and Jobs."""
    return [(f"{item['kind']}/{item['metadata']['name']}", item["spec"]["template"])
            for item in objects if item["kind"] in ("Deployment", "Job")]


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels and matchExpressions) against a set of labels, as Kubernetes reads it."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def container_ports(template: dict) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for container in template["spec"]["containers"]
            for port in container.get("ports", []) if "name" in port}


def allowed(objects: list[dict], template: dict, direction: str) -> list[tuple[dict, int | str]]:
    """(peer, port) pairs the NetworkPolicies allow for this pod in `direction` ("ingress" or "egress"), named
    ports resolved against the pod's own container ports for ingress."""
    labels = template["metadata"]["labels"]
    pairs = []
    for policy in of_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if direction.capitalize() not in spec["policyTypes"] or not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get(direction, []):
            peers = rule.get("from" if direction == "ingress" else "to", [])
            for peer in peers:
                for port in rule.get("ports", []):
                    number = port["port"]
                    if isinstance(number, str) and direction == "ingress":
                        number = container_ports(template).get(number, number)
                    pairs.append((peer, number))
    return pairs


def secret_template(directory: Path) -> dict[str, str]:
    document = yaml.safe_load((directory / "secret.template.yaml").read_text())
    assert document["kind"] == "Secret" and document["metadata"]["name"] == "clinic-secrets"
    return document["stringData"]


def env_of(container: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in container.get("env", [])}


# --- schemas -----------------------------------------------------------------------------------------


def test_every_object_is_valid_for_the_pinned_kubernetes(rendered):
    name, objects = rendered
    assert len(objects) > 40, f"{name}: only {len(objects)} objects rendered"
    for item in objects:
        try:
            kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {item['kind']}/{item['metadata']['name']}: {error.message} at {list(error.path)}")


def test_each_service_has_its_web_worker_service_job_and_budgets(rendered):
    _, objects = rendered
    for service in SERVICES:
        web = named(objects, "Deployment", f"{service}-web")
        worker = named(objects, "Deployment", f"{service}-worker")
        named(objects, "Job", f"{service}-migrate")
        assert worker["spec"]["template"]["spec"]["containers"][0]["command"] == [f"{service}-worker"]
        assert web["spec"]["template"]["spec"]["containers"][0]["image"] == \
            worker["spec"]["template"]["spec"]["containers"][0]["image"], f"{service}: web and worker run one image"
        port = named(objects, "Service", service)["spec"]["ports"][0]
        assert port["port"] == WEB_PORTS[service] and port["targetPort"] == "http"
        assert container_ports(web["spec"]["template"])["http"] == WEB_PORTS[service]


def test_the_four_service_files_differ_only_in_name_and_port():
    model = (BASE / "notifications.yaml").read_text()
    for service in SERVICES:
        expected = model.replace("notifications", service).replace(str(WEB_PORTS["notifications"]), str(WEB_PORTS[service]))
        assert (BASE / f"{service}.yaml").read_text() == expected, f"{service}.yaml has drifted from notifications.yaml"


# --- pods --------------------------------------------------------------------------------------------


def test_every_pod_is_locked_down_and_sized(rendered):
    name, objects = rendered
    for where, template in pods(objects):
        spec = template["spec"]
        assert spec.get("automountServiceAccountToken") is False, where
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["seccompProfile"]["type"] == "RuntimeDefault", where
        clinic_pod = "clinic-" in spec["containers"][0]["image"]
        if clinic_pod:
            assert pod_security["runAsUser"] == 10001 and pod_security["runAsGroup"] == 10001, where
        mounts_tmp = False
        for container in spec.get("initContainers", []) + spec["containers"]:
            label = f"{name} {where} {container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, label
            assert security["readOnlyRootFilesystem"] is True, label
            assert security["capabilities"]["drop"] == ["ALL"], label
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys() and {"cpu", "memory"} <= resources["limits"].keys(), label
            mounts_tmp |= any(mount["mountPath"] == "/tmp" for mount in container.get("volumeMounts", []))
        if clinic_pod:
            volumes = {volume["name"]: volume for volume in spec["volumes"]}
            assert mounts_tmp and "emptyDir" in volumes["tmp"], f"{where}: /tmp on an emptyDir (the root is read-only)"


def test_web_and_worker_pods_have_their_probes_and_grace(rendered):
    _, objects = rendered
    for service in SERVICES:
        web = named(objects, "Deployment", f"{service}-web")["spec"]["template"]
        worker = named(objects, "Deployment", f"{service}-worker")["spec"]["template"]
        for template in (web, worker):
            assert template["spec"]["terminationGracePeriodSeconds"] == 30, service
            assert [c["name"] for c in template["spec"]["initContainers"]] == ["wait-for-migrations"], service
            container = template["spec"]["containers"][0]
            assert env_of(container)["CLINIC_METRICS_PORT"]["value"] == str(METRICS_PORT), service
            assert container_ports(template)["metrics"] == METRICS_PORT, service
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, service
            assert template["metadata"]["annotations"]["prometheus.io/port"] == str(METRICS_PORT), service
        container = web["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, service
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"], service
        assert "lifecycle" not in worker["spec"]["containers"][0], service
    for deployment in of_kind(objects, "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "livenessProbe" in container and "readinessProbe" in container or \
            deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "worker", deployment["metadata"]["name"]


def test_the_migration_job_runs_as_the_owner_and_grants_the_login_role(rendered):
    name, objects = rendered
    for service in SERVICES:
        container = named(objects, "Job", f"{service}-migrate")["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["clinic", "migrate", service]
        env = env_of(container)
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == f"{service}-database-owner-url"
        assert env["CLINIC_DATABASE_SERVICE_ROLE"]["value"] == f"{service}_service"
        for deployment in (f"{service}-web", f"{service}-worker"):
            spec = named(objects, "Deployment", deployment)["spec"]["template"]["spec"]
            for container in spec["initContainers"] + spec["containers"]:
                key = env_of(container)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"]
                assert key == f"{service}-database-url", f"{name} {deployment}: the login role, never the owner"


def test_every_secret_key_referenced_is_in_the_template(rendered):
    name, objects = rendered
    keys = secret_template(BASE if name == "base" else PRODUCTION).keys()
    referenced = set()
    for _, template in pods(objects):
        for container in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    assert reference["name"] == "clinic-secrets", variable["name"]
                    referenced.add(reference["key"])
    assert referenced, "no Secret referenced"
    assert referenced <= keys, f"{name}: keys missing from secret.template.yaml: {sorted(referenced - keys)}"
    assert not of_kind(objects, "Secret"), "the Secret is created by hand, never by kubectl apply -k"


def test_the_budgets_select_existing_pods_and_leave_one_serving(rendered):
    _, objects = rendered
    budgets = of_kind(objects, "PodDisruptionBudget")
    deployments = of_kind(objects, "Deployment")
    covered = set()
    for budget in budgets:
        matches = [d for d in deployments if selects(budget["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        assert len(matches) == 1, f"{budget['metadata']['name']} selects {len(matches)} Deployments"
        deployment = matches[0]
        covered.add(deployment["metadata"]["name"])
        spec = budget["spec"]
        assert spec.get("maxUnavailable") == 1 or (spec.get("minAvailable") == 1 and deployment["spec"]["replicas"] >= 2)
    assert covered >= {f"{service}-{part}" for service in SERVICES for part in ("web", "worker")}


# --- network policies --------------------------------------------------------------------------------


def test_everything_is_denied_by_default(rendered):
    _, objects = rendered
    deny = named(objects, "NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for where, template in pods(objects):
        dns = [port for peer, port in allowed(objects, template, "egress")
               if peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "kube-system"]
        assert sorted(dns) == [53, 53], f"{where}: DNS over UDP and TCP"
        others = [pair for pair in allowed(objects, template, "ingress") + allowed(objects, template, "egress")
                  if pair[1] != 53]
        assert others, f"{where} is selected by no allow policy: it could reach nothing"


def test_each_service_reaches_its_database_and_the_broker(rendered):
    name, objects = rendered
    assert "clinic-network-settings" not in {c["metadata"]["name"] for c in of_kind(objects, "ConfigMap")}, \
        "network-settings.yaml is local-config: kustomize copies its values, never applies it"
    broker_port = 5672 if name == "base" else 5671
    for service in SERVICES:
        for component in ("web", "worker", "migrate"):
            template = next(t for _, t in pods(objects) if t["metadata"]["labels"] == {
                **t["metadata"]["labels"], "app.kubernetes.io/name": service, "app.kubernetes.io/component": component})
            egress = allowed(objects, template, "egress")
            ports = {port for peer, port in egress if "ipBlock" in peer}
            assert {5432, broker_port} <= ports, f"{name} {service}-{component}: {sorted(ports)}"
            assert (5671 if name == "base" else 5672) not in ports, f"{name} {service}-{component}: the other broker port"
            others = {port for peer, port in egress if "ipBlock" in peer} - {5432, broker_port}
            expected = {"web": {443, 8443}, "worker": {587, 465, 25} if service == "notifications" else set(), "migrate": set()}
            assert others == expected[component], f"{name} {service}-{component} reaches {sorted(others)}"
    policies = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
    for service in SERVICES:
        rules = policies[f"{service}-to-database-and-broker"]["spec"]["egress"]
        assert "/" in rules[0]["to"][0]["ipBlock"]["cidr"] and "/" in rules[1]["to"][0]["ipBlock"]["cidr"], \
            f"{service}: the CIDRs of network-settings.yaml were copied in"


def test_web_pods_take_traffic_from_the_ingress_only_and_reach_redis(rendered):
    _, objects = rendered
    redis = named(objects, "Deployment", "redis")["spec"]["template"]
    for service in SERVICES:
        web = named(objects, "Deployment", f"{service}-web")["spec"]["template"]
        ingress = allowed(objects, web, "ingress")
        on_http = [peer for peer, port in ingress if port == WEB_PORTS[service]]
        assert on_http and all(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "ingress-nginx"
                               and "podSelector" not in peer for peer in on_http), service
        assert {port for _, port in ingress} == {WEB_PORTS[service], METRICS_PORT}, service
        to_redis = [peer for peer, port in allowed(objects, web, "egress") if port == 6379]
        assert to_redis and all(selects(peer["podSelector"], redis["metadata"]["labels"]) for peer in to_redis), service
        from_web = [peer for peer, port in allowed(objects, redis, "ingress") if port == 6379]
        assert any(selects(peer["podSelector"], web["metadata"]["labels"]) for peer in from_web), service
    for service in SERVICES:
        worker = named(objects, "Deployment", f"{service}-worker")["spec"]["template"]
        assert not [port for peer, port in allowed(objects, worker, "egress") if port == 6379], "only the web counts limits"


def test_prometheus_reaches_every_metrics_port(rendered):
    _, objects = rendered
    prometheus_pod = {"app.kubernetes.io/name": "prometheus"}
    for where, template in pods(objects):
        if "metrics" not in container_ports(template):
            continue
        scrapers = [peer for peer, port in allowed(objects, template, "ingress") if port == METRICS_PORT]
        assert any(peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
                   and selects(peer["podSelector"], prometheus_pod) for peer in scrapers), where


# --- production --------------------------------------------------------------------------------------


def test_production_reaches_the_broker_and_the_databases_over_verified_tls(production):
    template = secret_template(PRODUCTION)
    assert template.keys() == secret_template(BASE).keys(), "the two templates name the same keys"
    for key, url in template.items():
        scheme = urlsplit(url).scheme
        if key.endswith("-rabbitmq-url"):
            assert scheme == "amqps", f"{key}: {url}"
        else:
            query = parse_qs(urlsplit(url).query)
            assert query.get("sslmode") == ["verify-full"], f"{key}: {url}"
            assert query.get("sslrootcert") == ["/etc/clinic/ca/ca.crt"], f"{key}: the CA mounted from clinic-ca"
    rendered_text = yaml.safe_dump_all(production)
    assert "amqp://" not in rendered_text
    assert "sslmode=" not in rendered_text.replace("sslmode=verify-full", "")
    assert named(production, "ConfigMap", "clinic-config")["data"]["CLINIC_RABBITMQ_CA_FILE"] == "/etc/clinic/ca/ca.crt"
    for where, template in pods(production):
        spec = template["spec"]
        if "redis" in where:
            continue
        assert {"name": "clinic-ca", "configMap": {"name": "clinic-ca"}} in spec["volumes"], where
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert {"name": "clinic-ca", "mountPath": "/etc/clinic/ca", "readOnly": True} in container["volumeMounts"], \
                f"{where} {container['name']}: connects to PostgreSQL, so needs the CA"


def test_production_pulls_from_the_registry_and_the_base_runs_local_images(base, production):
    for objects, prefix in ((base, "localhost/clinic-"), (production, "registry.example.com/clinic/")):
        for where, template in pods(objects):
            if "redis" not in where:
                images = {c["image"] for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]}
                assert len(images) == 1 and images.pop().startswith(prefix), where
    assert named(production, "Deployment", "records-web")["spec"]["replicas"] > named(base, "Deployment", "records-web")["spec"]["replicas"]


def test_the_base_stays_plain_for_a_lab():
    for key, url in secret_template(BASE).items():
        scheme = urlsplit(url).scheme
        assert scheme == ("amqp" if key.endswith("-rabbitmq-url") else "postgresql"), key
        assert "sslmode" not in url, key
