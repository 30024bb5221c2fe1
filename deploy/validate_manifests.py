"""Consistency checks over deploy/ that no schema can express.

Run by deploy/validate.sh inside its venv (needs PyYAML). Each check prints
one line; the exit status is the number of failed checks (capped at 1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"

# The RabbitMQ topology the application declares (its contract). Definitions
# must match it argument for argument: a queue re-declared with different
# arguments fails with PRECONDITION_FAILED and the app cannot start.
QUORUM = {"x-queue-type": "quorum"}
RETRY_DELAYS_MS = {"5s": 5_000, "30s": 30_000, "2m": 120_000, "10m": 600_000, "30m": 1_800_000}
EXPECTED_EXCHANGES = {"finch.events", "finch.events.dlx", "finch.synced"}
EXPECTED_QUEUES = {
    "finch.events.work": {
        **QUORUM,
        "x-dead-letter-exchange": "finch.events.dlx",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-delivery-limit": 20,
    },
    # Classic: the DLQ tools read it whole and give it back in order, which a
    # quorum queue cannot do past 65,535 unacknowledged messages.
    "finch.events.dlq": {"x-queue-type": "classic"},
    **{
        f"finch.events.retry.{name}": {
            **QUORUM,
            "x-message-ttl": ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "finch.events.work",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        for name, ms in RETRY_DELAYS_MS.items()
    },
}
EXPECTED_BINDINGS = {
    ("finch.events", "finch.events.work", "#"),
    ("finch.events.dlx", "finch.events.dlq", "#"),
}
REQUIRED_SECRETS = {
    "FINCH_WEBHOOK_SECRET", "FINCH_TOKEN_KEY", "DATABASE_URL", "MIGRATE_DATABASE_URL", "AMQP_URL", "ADMIN_TOKEN",
}
# Least privilege: the Secret keys each component may read, and no more.
COMPONENT_SECRETS = {
    "ingress": {"FINCH_WEBHOOK_SECRET", "DATABASE_URL", "AMQP_URL", "ADMIN_TOKEN"},
    "worker": {"FINCH_TOKEN_KEY", "FINCH_TOKEN_KEYS", "DATABASE_URL", "AMQP_URL"},
    "migrate": {"MIGRATE_DATABASE_URL", "AMQP_URL"},
}
SECRET_NAME = "finch-webhooks"
# Grace period margin for the process to flush and exit after the drain.
EXIT_MARGIN_SECS = 5

failures: list[str] = []
passes = 0


def check(name: str, problems: list[str]) -> None:
    global passes
    if problems:
        failures.append(name)
        print(f"FAIL {name}")
        for problem in problems:
            print(f"     - {problem}")
    else:
        passes += 1
        print(f"ok   {name}")


def load_yaml_docs(path: Path) -> list[dict]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def k8s_objects() -> dict[str, list[dict]]:
    return {
        path.name: load_yaml_docs(path)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def pod_specs(objects: dict[str, list[dict]]):
    for filename, docs in objects.items():
        for doc in docs:
            kind = doc.get("kind")
            if kind in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
                yield filename, doc, doc["spec"]["template"]["spec"]


# --------------------------------------------------------------------------
def check_rabbitmq_definitions() -> None:
    problems: list[str] = []
    defs = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    if {v["name"] for v in defs.get("vhosts", [])} != {"/"}:
        problems.append("vhosts must be exactly ['/'] (boot-time import creates no default vhost)")
    if defs.get("users") or defs.get("permissions"):
        problems.append("definitions.json must not carry users or permissions (left to the operator)")

    exchanges = {e["name"]: e for e in defs.get("exchanges", [])}
    if set(exchanges) != EXPECTED_EXCHANGES:
        problems.append(f"exchanges {sorted(exchanges)} != {sorted(EXPECTED_EXCHANGES)}")
    for name, exchange in exchanges.items():
        if exchange.get("type") != "topic" or exchange.get("durable") is not True:
            problems.append(f"exchange {name} must be a durable topic exchange")
        if exchange.get("auto_delete") or exchange.get("internal") or exchange.get("arguments"):
            problems.append(f"exchange {name}: auto_delete/internal/arguments must be false/empty")

    queues = {q["name"]: q for q in defs.get("queues", [])}
    if set(queues) != set(EXPECTED_QUEUES):
        problems.append(f"queues {sorted(queues)} != {sorted(EXPECTED_QUEUES)}")
    for name, expected in EXPECTED_QUEUES.items():
        queue = queues.get(name)
        if queue is None:
            continue
        if queue.get("durable") is not True or queue.get("auto_delete"):
            problems.append(f"queue {name} must be durable and not auto-delete")
        if queue.get("arguments") != expected:
            problems.append(f"queue {name} arguments {queue.get('arguments')} != {expected}")

    bindings = {
        (b["source"], b["destination"], b["routing_key"])
        for b in defs.get("bindings", [])
        if b.get("destination_type") == "queue"
    }
    if bindings != EXPECTED_BINDINGS or len(defs.get("bindings", [])) != len(EXPECTED_BINDINGS):
        problems.append(f"bindings {sorted(bindings)} != {sorted(EXPECTED_BINDINGS)}")

    # A policy key that a queue argument also sets is either ignored (the
    # argument wins) or silently combined (min of both for TTLs and limits);
    # both would make the effective value differ from what the file says.
    for policy in defs.get("policies", []):
        pattern = re.compile(policy["pattern"])
        matched = [q for q in EXPECTED_QUEUES if pattern.search(q)]
        if not matched:
            problems.append(f"policy {policy['name']} matches no queue")
        for queue in matched:
            overlap = {f"x-{key}" for key in policy["definition"]} & set(EXPECTED_QUEUES[queue])
            if overlap:
                problems.append(f"policy {policy['name']} sets {sorted(overlap)} already fixed by {queue}'s arguments")
    # Only the highest-priority policy applies to a queue; overlapping
    # patterns at equal priority make the winner arbitrary.
    for queue in EXPECTED_QUEUES:
        hits = [p for p in defs.get("policies", []) if re.search(p["pattern"], queue)]
        if len(hits) > 1:
            problems.append(f"queue {queue} matched by several policies: {[p['name'] for p in hits]}")
    check("rabbitmq: definitions.json matches the application's topology contract", problems)


def check_rabbitmq_conf() -> None:
    problems: list[str] = []
    for conf in ("rabbitmq.conf", "compose.conf"):
        keys = {}
        for number, line in enumerate((DEPLOY / "rabbitmq" / conf).read_text().splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            match = re.fullmatch(r"([a-z0-9_.]+)\s*=\s*(\S.*)", stripped)
            if not match:
                problems.append(f"{conf}:{number}: not a 'key = value' line: {line!r}")
                continue
            if match.group(1) in keys:
                problems.append(f"{conf}:{number}: duplicate key {match.group(1)}")
            keys[match.group(1)] = match.group(2)
        if keys.get("queue_leader_locator") != "balanced":
            problems.append(f"{conf}: queue_leader_locator must be balanced")
        if conf == "rabbitmq.conf":
            nodes = [k for k in keys if k.startswith("cluster_formation.classic_config.nodes.")]
            if len(nodes) != 3 or keys.get("cluster_formation.target_cluster_size_hint") != "3":
                problems.append("rabbitmq.conf must describe a three-node cluster")
            if keys.get("cluster_partition_handling") != "pause_minority":
                problems.append("rabbitmq.conf: cluster_partition_handling must be pause_minority")
    check("rabbitmq: rabbitmq.conf and compose.conf are well-formed key = value files", problems)


def check_dev_user_matches_compose(compose: dict) -> None:
    problems: list[str] = []
    users = json.loads((DEPLOY / "rabbitmq" / "dev-users.json").read_text())["users"]
    amqp = compose["x-app-env"]["AMQP_URL"]
    match = re.match(r"amqp://([^:]+):([^@]+)@", amqp)
    if not match:
        problems.append(f"cannot read credentials from AMQP_URL {amqp}")
    else:
        user, password = match.groups()
        record = next((u for u in users if u["name"] == user), None)
        if record is None:
            problems.append(f"dev-users.json has no user {user}")
        else:
            raw = base64.b64decode(record["password_hash"])
            salt, digest = raw[:4], raw[4:]
            if hashlib.sha256(salt + password.encode()).digest() != digest:
                problems.append(f"dev-users.json password hash for {user} does not match AMQP_URL's password")
    check("compose: RabbitMQ dev user in dev-users.json matches AMQP_URL", problems)


# --------------------------------------------------------------------------
def check_compose(compose: dict) -> None:
    problems: list[str] = []
    services = compose["services"]
    for name in ("postgres", "rabbitmq", "jaeger", "migrate", "ingress", "worker", "operator", "emulator"):
        if name not in services:
            problems.append(f"service {name} missing")
    if problems:
        check("compose: services and wiring", problems)
        return

    def env(service: str) -> dict:
        return services[service].get("environment", {})

    def depends(service: str) -> dict:
        return services[service].get("depends_on", {})

    if services["postgres"]["image"].split(":")[1] != "16":
        problems.append("postgres must be postgres:16")
    if not services["rabbitmq"]["image"].startswith("rabbitmq:3.13-management"):
        problems.append("rabbitmq must be rabbitmq:3.13-management")
    for dep in ("postgres", "rabbitmq"):
        if depends("migrate").get(dep, {}).get("condition") != "service_healthy":
            problems.append(f"migrate must wait for {dep} to be healthy")
    for service in ("ingress", "worker"):
        if depends(service).get("migrate", {}).get("condition") != "service_completed_successfully":
            problems.append(f"{service} must wait for migrate to complete successfully")
        endpoint = env(service).get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        if not endpoint.startswith("http://jaeger:4318"):
            problems.append(f"{service}: OTEL_EXPORTER_OTLP_ENDPOINT must point at jaeger:4318")
        if env(service).get("LOG_FORMAT") != "json":
            problems.append(f"{service}: LOG_FORMAT must be json")
    if env("worker").get("FINCH_API_BASE_URL") != "http://emulator:4010":
        problems.append("worker: FINCH_API_BASE_URL must be http://emulator:4010")
    key = env("worker").get("FINCH_TOKEN_KEY", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 32:
            problems.append("worker: FINCH_TOKEN_KEY must be base64 of 32 bytes")
    except ValueError:
        problems.append("worker: FINCH_TOKEN_KEY is not base64")
    worker_check = services["worker"].get("healthcheck", {}).get("test", [])
    if worker_check != ["CMD", "finch-webhooks", "health", "--url", "http://127.0.0.1:9091/healthz"]:
        problems.append("worker healthcheck must probe http://127.0.0.1:9091/healthz")

    emulator = services["emulator"]
    if emulator.get("build", {}).get("target") != "emulator":
        problems.append("emulator must be built from the Dockerfile's emulator target")
    for name, spec in services.items():
        if name != "emulator" and spec.get("build", {}).get("target") == "emulator":
            problems.append(f"{name} must run the production image, not the emulator's")
    command = emulator["command"]
    opts = {command[i]: command[i + 1] for i in range(len(command) - 1) if command[i].startswith("--")}
    if opts.get("--listen") != "0.0.0.0:4010":
        problems.append("emulator must listen on 0.0.0.0:4010")
    if opts.get("--webhook-url") != "http://ingress:8080/webhooks/finch":
        problems.append("emulator must send webhooks to http://ingress:8080/webhooks/finch")
    ingress_secrets = env("ingress").get("FINCH_WEBHOOK_SECRET", "").split(",")
    if opts.get("--webhook-secret") not in ingress_secrets:
        problems.append("emulator's --webhook-secret is not one of the ingress's FINCH_WEBHOOK_SECRET")
    if opts.get("--client-id") != env("operator").get("FINCH_CLIENT_ID") or opts.get(
        "--client-secret"
    ) != env("operator").get("FINCH_CLIENT_SECRET"):
        problems.append("emulator client credentials differ from the operator's FINCH_CLIENT_ID/SECRET")
    for service in ("migrate", "ingress", "worker"):
        for secret in ("FINCH_CLIENT_ID", "FINCH_CLIENT_SECRET"):
            if secret in env(service):
                problems.append(f"{service} must not get {secret}: only the operator's code exchange uses it")
    if env("ingress").get("FINCH_TOKEN_KEY") or env("migrate").get("FINCH_TOKEN_KEY"):
        problems.append("only the worker and the operator get FINCH_TOKEN_KEY")
    if env("operator").get("FINCH_TOKEN_KEY") != env("worker").get("FINCH_TOKEN_KEY"):
        problems.append("the operator and the worker must share FINCH_TOKEN_KEY")
    if "tools" not in services["operator"].get("profiles", []):
        problems.append("operator must be in the tools profile, so `up` does not start it")

    for service, spec in services.items():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (DEPLOY / source).exists():
                problems.append(f"{service}: bind mount source {source} does not exist")
    check("compose: services, dependencies, secrets and tracing are wired together", problems)


# --------------------------------------------------------------------------
def check_kustomization(objects: dict[str, list[dict]]) -> None:
    problems: list[str] = []
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization.get("resources", [])
    for resource in listed:
        if not (K8S / resource).is_file():
            problems.append(f"kustomization lists missing file {resource}")
    unlisted = set(objects) - set(listed) - {"secret.example.yaml"}
    if unlisted:
        problems.append(f"manifests not in kustomization.yaml: {sorted(unlisted)}")
    if "secret.example.yaml" in listed:
        problems.append("secret.example.yaml must not be applied by the kustomization")
    kinds = {doc["kind"] for name in listed if name in objects for doc in objects[name]}
    for kind in ("Deployment", "Job", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        if kind not in kinds:
            problems.append(f"no {kind} in the kustomization")
    check("kubernetes: kustomization.yaml lists every manifest (except the Secret example)", problems)


def check_pods(objects: dict[str, list[dict]]) -> None:
    problems: list[str] = []
    configmap = next(d for docs in objects.values() for d in docs if d["kind"] == "ConfigMap")
    shutdown = int(configmap["data"]["SHUTDOWN_TIMEOUT_SECS"])
    secret_keys = set(
        next(d for d in objects["secret.example.yaml"] if d["kind"] == "Secret")["stringData"]
    )
    referenced: set[str] = set()
    for key in REQUIRED_SECRETS:
        if key in configmap["data"]:
            problems.append(f"ConfigMap must not hold the secret {key}")

    for filename, doc, spec in pod_specs(objects):
        where = f"{filename} ({doc['kind']})"
        pod_sc = spec.get("securityContext", {})
        if pod_sc.get("runAsNonRoot") is not True or pod_sc.get("runAsUser") != 10001:
            problems.append(f"{where}: pod must runAsNonRoot as user 10001")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        for container in spec["containers"]:
            cname = f"{where} container {container['name']}"
            sc = container.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cname}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cname}: allowPrivilegeEscalation must be false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{cname}: capabilities must drop ALL")
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(section, {}):
                        problems.append(f"{cname}: resources.{section}.{resource} missing")
            if container.get("image") != "finch-webhooks":
                problems.append(f"{cname}: image must be 'finch-webhooks' (set by kustomization images)")

            pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
            needed = sleep + shutdown + EXIT_MARGIN_SECS
            if doc["kind"] == "Deployment" and grace < needed:
                problems.append(
                    f"{cname}: terminationGracePeriodSeconds {grace} < preStop {sleep} + "
                    f"shutdown {shutdown} + margin {EXIT_MARGIN_SECS}"
                )

            port_names = {p["name"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                if doc["kind"] != "Deployment":
                    continue
                http = container.get(probe, {}).get("httpGet")
                if not http:
                    problems.append(f"{cname}: {probe} with httpGet missing")
                    continue
                if http["port"] not in port_names:
                    problems.append(f"{cname}: {probe} uses unknown port {http['port']}")
                expected = "/readyz" if probe == "readinessProbe" else "/healthz"
                if http["path"] != expected:
                    problems.append(f"{cname}: {probe} must probe {expected}")

            component = doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
            allowed = COMPONENT_SECRETS.get(component, set())
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in allowed:
                    problems.append(f"{cname}: the {component} role must not get the secret {ref['key']}")
                if env["name"] in REQUIRED_SECRETS and not ref:
                    problems.append(f"{cname}: {env['name']} must come from a secretKeyRef")
                if ref:
                    referenced.add(ref["key"])
                    if ref["name"] != SECRET_NAME:
                        problems.append(f"{cname}: secretKeyRef to unknown Secret {ref['name']}")
                    if ref["key"] not in secret_keys:
                        problems.append(f"{cname}: secret key {ref['key']} missing from secret.example.yaml")

    missing = REQUIRED_SECRETS - referenced
    if missing:
        problems.append(f"secrets never referenced: {sorted(missing)}")
    check(
        "kubernetes: security contexts, resources, probes, secret references, "
        f"grace period >= preStop + {shutdown}s drain + {EXIT_MARGIN_SECS}s",
        problems,
    )


def check_services_and_scaling(objects: dict[str, list[dict]]) -> None:
    problems: list[str] = []
    by_kind: dict[str, list[dict]] = {}
    for docs in objects.values():
        for doc in docs:
            by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}

    for service in by_kind.get("Service", []):
        selector = service["spec"]["selector"]
        targets = [
            d for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        if len(targets) != 1:
            problems.append(f"Service {service['metadata']['name']} selects {len(targets)} Deployments")
            continue
        ports = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in ports:
                problems.append(f"Service {service['metadata']['name']}: targetPort {port['targetPort']} not a container port")

    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problems.append(f"HPA targets unknown Deployment {target}")
        elif "replicas" in deployments[target]["spec"]:
            problems.append(f"Deployment {target} sets replicas although an HPA owns it")
        if hpa["spec"].get("minReplicas", 1) < 2:
            problems.append("HPA minReplicas must be at least 2 (the PDB keeps one)")
        if not any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"]["metrics"]):
            problems.append("HPA must scale on CPU")

    for pdb in by_kind.get("PodDisruptionBudget", []):
        selector = pdb["spec"]["selector"]["matchLabels"]
        if not any(selector.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values()):
            problems.append(f"PDB {pdb['metadata']['name']} selects no Deployment")

    for name, deployment in deployments.items():
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        ports = {str(p["containerPort"]) for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") not in ports:
            problems.append(f"Deployment {name}: Prometheus scrape annotations missing or pointing at no port")
    check("kubernetes: Services, HPA, PDBs and scrape annotations point at real pods and ports", problems)


def check_admin_port_stays_in_the_cluster(objects: dict[str, list[dict]]) -> None:
    """The ingress's admin port (admin API, /metrics) is listened on apart from
    the public one, reached only from inside the cluster, and never a target
    of the public Service."""
    problems: list[str] = []
    docs = [d for ds in objects.values() for d in ds]
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    admin_addr = configmap["data"].get("ADMIN_LISTEN_ADDR", "")
    if not admin_addr.endswith(":9090"):
        problems.append("ConfigMap ADMIN_LISTEN_ADDR must be set to port 9090")
    if admin_addr.rsplit(":", 1)[-1] == configmap["data"].get("LISTEN_ADDR", "").rsplit(":", 1)[-1]:
        problems.append("ADMIN_LISTEN_ADDR must not share LISTEN_ADDR's port")
    ingress_labels = {"app.kubernetes.io/name": "finch-webhooks", "app.kubernetes.io/component": "ingress"}
    policies = [
        d for d in docs
        if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"].get("matchLabels") == ingress_labels
    ]
    if len(policies) != 1:
        problems.append(f"exactly one NetworkPolicy must select the ingress pods, found {len(policies)}")
    for policy in policies:
        if "Ingress" not in policy["spec"].get("policyTypes", []):
            problems.append("the ingress NetworkPolicy must restrict Ingress traffic")
        for rule in policy["spec"].get("ingress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if not ports:
                problems.append("a rule without ports opens every port, the admin one too")
            if "admin" in ports or 9090 in ports:
                sources = rule.get("from", [])
                if not sources or any("ipBlock" in source for source in sources):
                    problems.append("the admin port must be reachable only from pod or namespace selectors")
    for service in (d for d in docs if d["kind"] == "Service"):
        targets = {p["targetPort"] for p in service["spec"]["ports"]}
        if service["metadata"]["name"] == "finch-webhooks-ingress" and targets & {"admin", 9090}:
            problems.append("the public ingress Service must not target the admin port")
        if "admin" in targets and service["spec"].get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"Service {service['metadata']['name']} exposes the admin port outside the cluster")
    check("kubernetes: the admin port is apart from the public one and stays inside the cluster", problems)


# --------------------------------------------------------------------------
def check_dockerfile() -> None:
    problems: list[str] = []
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    instructions = [
        line.strip() for line in logical.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    froms = [i for i in instructions if i.upper().startswith("FROM ")]
    if len(froms) < 2:
        problems.append("Dockerfile must be multi-stage")
    runtime = instructions[instructions.index(froms[-1]):]
    expectations = {
        "USER 10001:10001": "runtime stage must run as user 10001",
        'ENTRYPOINT ["finch-webhooks"]': 'ENTRYPOINT must be ["finch-webhooks"]',
        'CMD ["serve"]': 'CMD must be ["serve"]',
    }
    for instruction, message in expectations.items():
        if instruction not in runtime:
            problems.append(message)
    healthchecks = [i for i in runtime if i.startswith("HEALTHCHECK")]
    if len(healthchecks) != 1 or not healthchecks[0].endswith('CMD ["finch-webhooks", "health"]'):
        problems.append('HEALTHCHECK must run ["finch-webhooks", "health"]')
    if "cargo chef cook" not in text or "--locked" not in text:
        problems.append("dependency layer must be built with cargo chef cook --locked")

    # The production binary leaves the emulator out, and its dependency layer
    # is cooked with the same flags so that it is reused rather than rebuilt.
    stages: dict[str, list[str]] = {}
    for instruction in instructions:
        if instruction.upper().startswith("FROM "):
            name = instruction.split()[-1] if " AS " in instruction.upper() else ""
            stages[name] = current = []
        elif stages:
            current.append(instruction)
    if not any(i.startswith("COPY --from=builder ") for i in runtime):
        problems.append("runtime stage must copy the binary from the builder stage")
    builder_runs = [i for i in stages.get("builder", []) if i.startswith("RUN ")]
    for step in ("cargo chef cook", "cargo build"):
        runs = [i for i in builder_runs if step in i]
        if not runs or not all("--no-default-features" in i for i in runs):
            problems.append(f"builder stage must run {step} with --no-default-features (no emulator in production)")

    # Every COPY from the build context must exist and survive .dockerignore.
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for instruction in instructions:
        parts = instruction.split()
        if parts[0] != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        for source in parts[1:-1]:
            if not (ROOT / source).exists():
                problems.append(f"COPY source {source} does not exist")
            if source.rstrip("/") not in allowed:
                problems.append(f"COPY source {source} is excluded by .dockerignore")
    check("dockerfile: stages, user, entrypoint, healthcheck and build context agree", problems)


def check_test_webhook_signature() -> None:
    problems: list[str] = []
    secret = "ZmluY2gtd2ViaG9va3MtZGV2LW9ubHktc2VjcmV0ISE="
    env = dict(os.environ, DRY_RUN="1", EVENT_ID="msg_fixed", TIMESTAMP="1700000000", FINCH_WEBHOOK_SECRET=secret)
    out = subprocess.run(
        ["bash", str(DEPLOY / "send-test-webhook.sh")], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        problems.append(f"send-test-webhook.sh failed: {out.stderr.strip()}")
    else:
        head, body = out.stdout.split("\n\n", 1)
        headers = dict(line.split(": ", 1) for line in head.splitlines())
        body = body.rstrip("\n")
        digest = hmac.new(base64.b64decode(secret), f"msg_fixed.1700000000.{body}".encode(), hashlib.sha256).digest()
        if headers.get("finch-signature") != "v1," + base64.b64encode(digest).decode():
            problems.append("send-test-webhook.sh signature differs from HMAC-SHA256(id.timestamp.body)")
        if json.loads(body).get("event_type") is None:
            problems.append("test body has no event_type")
    check("send-test-webhook.sh signs like crates/finch-core/src/signature.rs", problems)


def main() -> int:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    objects = k8s_objects()
    check_rabbitmq_definitions()
    check_rabbitmq_conf()
    check_dev_user_matches_compose(compose)
    check_compose(compose)
    check_kustomization(objects)
    check_pods(objects)
    check_services_and_scaling(objects)
    check_admin_port_stays_in_the_cluster(objects)
    check_dockerfile()
    check_test_webhook_signature()
    print(f"consistency checks: {passes} ok, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
