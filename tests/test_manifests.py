"""The Kubernetes manifests in deploy/k8s are objects a cluster accepts, and agree with loglake.

Every core object is checked against the Kubernetes OpenAPI schema (kubernetes-validate bundles
them; strict: an unknown field is an error), for the oldest version the manifests need (1.29,
native sidecars) and the newest bundled one. On top, our own rules: probes and ports point at the
paths and port each component serves, every mount names a declared volume, embedded configs load
with our loaders, Secrets come from where the comments say, images are the Dockerfile's, the
security contexts are what the comments promise, and the Strimzi ACLs grant exactly what the
shipper and aggregator need. Each rule is a function returning the problems it finds, so the
negative tests at the end show a broken manifest is caught.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from aggregator import config as aggregator_config
from runtime.errors import ConfigError
from shipper import config as shipper_config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
MANIFESTS = sorted(K8S.rglob("*.yaml"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SCRIPTS = set(PYPROJECT["project"]["scripts"])
IMAGE = f"loglake:{VERSION}"

# The endpoint contract: both components serve these on their metrics_address.
METRICS, LIVENESS, READINESS = "/metrics", "/healthz", "/readyz"
ENDPOINTS = {METRICS, LIVENESS, READINESS}
PORTS = {"loglake-shipper": 2020, "loglake-aggregator": 2021}
LOADERS = {"loglake-shipper": shipper_config.load, "loglake-aggregator": aggregator_config.load}
CONFIG_PATH = "/etc/loglake/loglake.toml"

# Kubernetes versions validated: native sidecars (restartPolicy: Always init containers) are on by
# default from 1.29; and the newest the installed kubernetes-validate bundles.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
# Custom resources, checked by our own rules below (no schema of theirs is bundled).
CUSTOM_KINDS = {("kafka.strimzi.io/v1beta2", "KafkaTopic"), ("kafka.strimzi.io/v1beta2", "KafkaUser"),
                ("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "ServiceMonitor")}
WORKLOAD_KINDS = {"Pod", "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob"}

# Secrets no manifest creates (none is in git), by who makes them and the keys they hold.
STRIMZI_USER_KEYS = {"ca.crt", "user.crt", "user.key", "user.p12", "user.password"}
EXTERNAL_SECRETS = {"kafka-cluster-ca-cert": {"ca.crt", "ca.p12", "ca.password"},  # Strimzi's cluster CA
                    "loglake-master-key": {"master-key"}}                            # made by the admin
# The Downward API fields the sidecar's LOGLAKE_K8S_* variables come from (the shipper's contract).
DOWNWARD = {"LOGLAKE_K8S_NAMESPACE": "metadata.namespace", "LOGLAKE_K8S_POD": "metadata.name",
            "LOGLAKE_K8S_POD_UID": "metadata.uid", "LOGLAKE_K8S_NODE": "spec.nodeName"}
FIELD_SAMPLES = {"metadata.namespace": "billing", "metadata.name": "billing-invoices-x7k2p",
                 "metadata.uid": "0a1b2c3d-0000-4000-8000-000000000001", "spec.nodeName": "node-7"}
# Pod Security "restricted": the volume types it allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


DOCS = {p.relative_to(K8S).as_posix(): load_docs(p) for p in MANIFESTS}
ALL = [d for docs in DOCS.values() for d in docs]


def is_core(doc: dict) -> bool:
    """A built-in API group: "v1", "apps/v1", "batch/v1", "*.k8s.io/..." (no custom resource)."""
    group = doc["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def ident(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata'].get('namespace', '-')}/{doc['metadata']['name']}"


def find(kind: str, docs: list[dict] = ALL) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def find_one(kind: str, name: str, namespace: str | None = None, docs: list[dict] = ALL) -> dict | None:
    for d in find(kind, docs):
        if d["metadata"]["name"] == name and (namespace is None or d["metadata"].get("namespace") == namespace):
            return d
    return None


# workloads -------------------------------------------------------------------------------------

@dataclass
class Workload:
    file: str
    doc: dict

    @property
    def name(self) -> str:
        return self.doc["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.doc["metadata"]["namespace"]

    @property
    def template(self) -> dict:
        d = self.doc
        if d["kind"] == "Pod":
            return d
        if d["kind"] == "CronJob":
            return d["spec"]["jobTemplate"]["spec"]["template"]
        return d["spec"]["template"]

    @property
    def pod(self) -> dict:
        return self.template["spec"]

    @property
    def labels(self) -> dict:
        return self.template.get("metadata", {}).get("labels", {})

    def containers(self) -> list[dict]:
        return self.pod.get("initContainers", []) + self.pod["containers"]

    def loglake(self) -> list[tuple[dict, str]]:
        """(container, component) for each container running a loglake binary."""
        out = []
        for c in self.containers():
            if c["image"].split(":")[0].split("/")[-1] == "loglake":
                argv = c.get("command", []) + c.get("args", [])
                out.append((c, argv[0] if argv else "?"))
        return out

    def volumes(self) -> dict[str, dict]:
        vols = {v["name"]: v for v in self.pod.get("volumes", [])}
        for t in self.doc["spec"].get("volumeClaimTemplates", []) if self.doc["kind"] == "StatefulSet" else []:
            vols[t["metadata"]["name"]] = {"name": t["metadata"]["name"], "persistentVolumeClaim": {}}
        return vols


def workloads(docs_by_file: dict[str, list[dict]] = DOCS) -> list[Workload]:
    return [Workload(f, d) for f, docs in docs_by_file.items() for d in docs if d["kind"] in WORKLOAD_KINDS]


WORKLOADS = workloads()
W = {w.name: w for w in WORKLOADS}


def by_name(name: str) -> Workload:
    return Workload(W[name].file, copy.deepcopy(W[name].doc))


def container_env(c: dict) -> dict[str, str]:
    """The container's environment as kubelet makes it (Downward API fields from samples, $(VAR)
    expanded from earlier variables, Secrets as placeholders)."""
    env: dict[str, str] = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), e["value"])
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = FIELD_SAMPLES[e["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            env[e["name"]] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="  # 32 zero bytes, base64
    return env


def fixed_dir(pattern: Path) -> str:
    """The directory a glob's matches are all under: /var/log/containers for /var/log/containers/*.log."""
    return re.split(r"[*?\[]", str(pattern))[0].rsplit("/", 1)[0]


def mount_for(c: dict, path: str) -> dict | None:
    """The mount that holds ``path`` in the container (the deepest one)."""
    best = None
    for m in c.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if (path == mp or path.startswith(mp + "/")) and (best is None or len(mp) > len(best["mountPath"])):
            best = m
    return best


def embedded_config(w: Workload, c: dict, docs: list[dict] = ALL) -> tuple[str | None, list[str]]:
    """The loglake.toml the container runs with: its --config file, mounted from a ConfigMap."""
    argv = c.get("command", []) + c.get("args", [])
    if "--config" not in argv:
        return None, [f"{c['name']}: runs without --config"]
    path = argv[argv.index("--config") + 1]
    m = mount_for(c, path)
    if m is None:
        return None, [f"{c['name']}: --config {path} is on no volume"]
    vol = w.volumes().get(m["name"], {})
    if "configMap" not in vol:
        return None, [f"{c['name']}: --config {path} is not mounted from a ConfigMap"]
    cm = find_one("ConfigMap", vol["configMap"]["name"], w.namespace, docs)
    if cm is None:
        return None, [f"{c['name']}: ConfigMap {vol['configMap']['name']} is not in the manifests"]
    key = m.get("subPath") or Path(path).name
    if key not in cm.get("data", {}):
        return None, [f"{c['name']}: ConfigMap {cm['metadata']['name']} has no key {key}"]
    return cm["data"][key], []


def load_config(component: str, text: str, env: dict[str, str], tmp: Path):
    f = tmp / f"{component}.toml"
    f.write_text(text)
    f.chmod(0o600)
    return LOADERS[component](str(f), env)


def served_port(w: Workload, c: dict, component: str, tmp: Path, docs: list[dict] = ALL) -> int | None:
    text, _ = embedded_config(w, c, docs)
    if text is None:
        return None
    try:
        settings = load_config(component, text, container_env(c), tmp)
    except ConfigError:
        return None
    section = settings.shipper if component == "loglake-shipper" else settings.aggregator
    return int(section.metrics_address.rpartition(":")[2]) if section.metrics_address else None


# rules -----------------------------------------------------------------------------------------

def probe_problems(w: Workload, tmp: Path, docs: list[dict] = ALL) -> list[str]:
    """Liveness on /healthz, readiness on /readyz (separate), any probe on a served path, each on the
    port the component's metrics_address opens, by a port the container declares."""
    problems = []
    for c, component in w.loglake():
        port = served_port(w, c, component, tmp, docs)
        if port is None:
            problems.append(f"{c['name']}: its config serves no metrics_address")
            continue
        declared = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if declared.get("metrics") != port:
            problems.append(f"{c['name']}: no container port named metrics for metrics_address port {port}")
        for kind, want in (("startupProbe", None), ("livenessProbe", LIVENESS), ("readinessProbe", READINESS)):
            probe = c.get(kind)
            if probe is None:
                if want:
                    problems.append(f"{c['name']}: no {kind}")
                continue
            get = probe.get("httpGet")
            if get is None:
                problems.append(f"{c['name']}: {kind} is not an HTTP GET of a served path")
                continue
            if get.get("path") not in ENDPOINTS:
                problems.append(f"{c['name']}: {kind} path {get.get('path')} is not served "
                                f"(the component serves {sorted(ENDPOINTS)})")
            elif want and get["path"] != want:
                problems.append(f"{c['name']}: {kind} on {get['path']}, not {want}")
            number = declared.get(get["port"]) if isinstance(get["port"], str) else get["port"]
            if number is None:
                problems.append(f"{c['name']}: {kind} port {get['port']!r} names no port of the container")
            elif number != port:
                problems.append(f"{c['name']}: {kind} port {number} is not the metrics_address port {port}")
    return problems


def scrape_problems(w: Workload, tmp: Path) -> list[str]:
    """prometheus.io annotations name the served metrics port and path."""
    ann = w.template.get("metadata", {}).get("annotations", {})
    ports = {served_port(w, c, comp, tmp) for c, comp in w.loglake()}
    problems = []
    if ann.get("prometheus.io/scrape") != "true":
        problems.append("no prometheus.io/scrape: \"true\"")
    if ann.get("prometheus.io/port") not in {str(p) for p in ports}:
        problems.append(f"prometheus.io/port {ann.get('prometheus.io/port')} is not a metrics port {ports}")
    if ann.get("prometheus.io/path", METRICS) != METRICS:
        problems.append(f"prometheus.io/path {ann.get('prometheus.io/path')} is not {METRICS}")
    return problems


def secret_refs(w: Workload) -> list[tuple[str, str | None]]:
    """(secret name, key or None for all keys) for every Secret the pod uses."""
    refs: list[tuple[str, str | None]] = []
    for v in w.pod.get("volumes", []):
        sources = [{"secret": {"name": v["secret"]["secretName"], "items": v["secret"].get("items")}}] \
            if "secret" in v else v.get("projected", {}).get("sources", [])
        for s in sources:
            if "secret" in s:
                items = s["secret"].get("items") or [None]
                refs += [(s["secret"]["name"], i["key"] if i else None) for i in items]
    for c in w.containers():
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.append((ref["name"], ref["key"]))
    return refs


def kafka_users(docs: list[dict] = ALL) -> dict[str, dict]:
    return {u["metadata"]["name"]: u for u in find("KafkaUser", docs)}


def volume_problems(w: Workload, docs: list[dict] = ALL) -> list[str]:
    """Every mount names a declared volume; ConfigMaps exist with the keys mounted; Secrets are
    ones the manifests say where they come from, with keys such Secrets have."""
    problems = []
    vols = w.volumes()
    names = [v["name"] for v in w.pod.get("volumes", [])]
    if len(names) != len(set(names)):
        problems.append(f"volume declared twice: {sorted(n for n in names if names.count(n) > 1)}")
    used = set()
    for c in w.containers():
        paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
        if len(paths) != len(set(paths)):
            problems.append(f"{c['name']}: two mounts at one path")
        for m in c.get("volumeMounts", []):
            used.add(m["name"])
            if m["name"] not in vols:
                problems.append(f"{c['name']}: volumeMount {m['name']} names no declared volume")
                continue
            cm = vols[m["name"]].get("configMap")
            if cm and m.get("subPath"):
                found = find_one("ConfigMap", cm["name"], w.namespace, docs)
                if found is None or m["subPath"] not in found.get("data", {}):
                    problems.append(f"{c['name']}: ConfigMap {cm['name']} key {m['subPath']} is not in the manifests")
    for n in set(vols) - used:
        problems.append(f"volume {n} is mounted by no container")
    for v in w.pod.get("volumes", []):
        if "configMap" in v and find_one("ConfigMap", v["configMap"]["name"], w.namespace, docs) is None:
            problems.append(f"volume {v['name']}: ConfigMap {v['configMap']['name']} is not in the manifests")
    users = kafka_users(docs)
    for name, key in secret_refs(w):
        keys = STRIMZI_USER_KEYS if name in users else EXTERNAL_SECRETS.get(name)
        if keys is None:
            problems.append(f"Secret {name} is neither a KafkaUser's nor a documented one {sorted(EXTERNAL_SECRETS)}")
        elif key is not None and key not in keys:
            problems.append(f"Secret {name} has no key {key} (it holds {sorted(keys)})")
    return problems


def config_problems(w: Workload, tmp: Path, docs: list[dict] = ALL) -> list[str]:
    """The embedded config loads with the component's loader in the container's environment; what
    it names is where the pod puts it: state on a writable volume, TLS files and included logs on
    mounted ones, metrics on every address."""
    problems = []
    for c, component in w.loglake():
        text, found = embedded_config(w, c, docs)
        problems += found
        if text is None:
            continue
        try:
            s = load_config(component, text, container_env(c), tmp)
        except ConfigError as e:
            problems.append(f"{c['name']}: config does not load: {e}")
            continue
        section = s.shipper if component == "loglake-shipper" else s.aggregator
        vols = w.volumes()
        m = mount_for(c, str(section.data_dir))
        if m is None or m.get("readOnly") or set(vols.get(m["name"], {})) & {"configMap", "secret", "projected"}:
            problems.append(f"{c['name']}: data_dir {section.data_dir} is not on a writable volume")
        files = [section.tls_cert_file, section.tls_key_file, s.transport.kafka.ca_file if s.transport.kafka else None]
        for f in filter(None, files):
            if mount_for(c, str(f)) is None:
                problems.append(f"{c['name']}: {f} is on no mounted volume")
        if s.transport.kafka is None:
            problems.append(f"{c['name']}: no [kafka]: a cluster's components must share a broker, not a spool")
        if section.metrics_address.rpartition(":")[0] not in ("0.0.0.0", "[::]", ""):
            problems.append(f"{c['name']}: metrics_address {section.metrics_address} is not reachable from outside "
                            "the pod (kubelet's probes and Prometheus use the pod IP)")
        if component == "loglake-shipper":
            for pattern in s.shipper.include:
                if mount_for(c, fixed_dir(pattern)) is None:
                    problems.append(f"{c['name']}: include {pattern} is on no mounted volume")
    return problems


def image_problems(w: Workload) -> list[str]:
    problems = []
    for c, component in w.loglake():
        if c["image"] != IMAGE:
            problems.append(f"{c['name']}: image {c['image']}, not {IMAGE} (the Dockerfile's, pyproject's version)")
        if component not in SCRIPTS:
            problems.append(f"{c['name']}: runs {component}, not one of the image's entry points {sorted(SCRIPTS)}")
    return problems


def host_path(w: Workload) -> bool:
    return any("hostPath" in v for v in w.pod.get("volumes", []))


def effective(w: Workload, c: dict, key: str):
    return c.get("securityContext", {}).get(key, w.pod.get("securityContext", {}).get(key))


def security_problems(w: Workload, docs: list[dict] = ALL) -> list[str]:
    """What every loglake container gets: no privilege escalation, no capabilities, a read-only root,
    the runtime's seccomp profile; non-root unless the pod reads the node's files (hostPath);
    no API token; no service-link variables."""
    problems = []
    for c, _ in w.loglake():
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            problems.append(f"{c['name']}: capabilities are not drop: [ALL] with nothing added")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{c['name']}: the root filesystem is writable")
        if (effective(w, c, "seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{c['name']}: seccompProfile is not RuntimeDefault")
        non_root = effective(w, c, "runAsNonRoot") is True and effective(w, c, "runAsUser") not in (0, None)
        if not host_path(w) and not non_root:
            problems.append(f"{c['name']}: may run as root but reads no host files")
    sa = find_one("ServiceAccount", w.pod.get("serviceAccountName", "default"), w.namespace, docs)
    token = w.pod.get("automountServiceAccountToken", sa.get("automountServiceAccountToken") if sa else None)
    if token is not False:
        problems.append("the pod gets an API token (automountServiceAccountToken is not false)")
    if w.pod.get("enableServiceLinks") is not False:
        problems.append("enableServiceLinks is not false")
    return problems


def restricted_problems(w: Workload) -> list[str]:
    """The Pod Security "restricted" level (pod-security.kubernetes.io), for every container."""
    problems = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if w.pod.get(key):
            problems.append(f"{key}")
    for v in w.volumes().values():
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {v['name']} of type {sorted(kinds)}")
    for c in w.containers():
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []) or \
                set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{c['name']}: capabilities do not drop ALL")
        if effective(w, c, "runAsNonRoot") is not True or effective(w, c, "runAsUser") == 0:
            problems.append(f"{c['name']}: not runAsNonRoot")
        if (effective(w, c, "seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{c['name']}: no seccompProfile")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{c['name']}: hostPort")
    return problems


def sidecar_problems(w: Workload, tmp: Path) -> list[str]:
    """A sidecar shipper is a native sidecar (so a Job completes) and names the app's pod and
    container from the Downward API (a path like /var/log/app/x.log carries neither)."""
    problems = []
    init = {c["name"] for c in w.pod.get("initContainers", [])}
    apps = w.pod["containers"]
    for c, component in w.loglake():
        if component != "loglake-shipper":
            continue
        if c["name"] not in init or c.get("restartPolicy") != "Always":
            problems.append(f"{c['name']}: not an init container with restartPolicy: Always (a Job would never end)")
        env = {e["name"]: e for e in c.get("env", [])}
        for var, field in DOWNWARD.items():
            got = env.get(var, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if got != field:
                problems.append(f"{c['name']}: {var} is not the Downward API's {field} (got {got})")
        target = env.get("LOGLAKE_K8S_CONTAINER", {}).get("value")
        text, _ = embedded_config(w, c)
        include = load_config(component, text, container_env(c), tmp).shipper.include if text else ()
        read = {m["name"] for m in (mount_for(c, fixed_dir(p)) for p in include) if m}
        writers = [a["name"] for a in apps if read & {m["name"] for m in a.get("volumeMounts", [])}]
        if target not in writers:
            problems.append(f"{c['name']}: LOGLAKE_K8S_CONTAINER={target} is not the container writing the logs "
                            f"it reads ({writers})")
        if any(a.get("image", "").startswith("loglake:") for a in apps):
            problems.append("a shipper among the regular containers keeps the pod running")
    return problems


def all_configs(tmp: Path) -> list[tuple[str, object]]:
    out = []
    for w in WORKLOADS:
        for c, component in w.loglake():
            text, _ = embedded_config(w, c)
            out.append((component, load_config(component, text, container_env(c), tmp)))
    return out


def tls_user(w: Workload, c: dict) -> str | None:
    """The KafkaUser whose certificate the container presents (the Secret behind tls_cert_file)."""
    m = mount_for(c, "/etc/loglake/tls/tls.crt")
    vol = w.volumes().get(m["name"], {}) if m else {}
    for s in vol.get("projected", {}).get("sources", []):
        if any(i["path"] == "tls.crt" for i in s.get("secret", {}).get("items", [])):
            return s["secret"]["name"]
    return None


def acl_ops(user: dict, rtype: str, name: str) -> set[str]:
    ops: set[str] = set()
    for acl in user["spec"].get("authorization", {}).get("acls", []):
        r = acl["resource"]
        if r["type"] != rtype:
            continue
        if (r.get("patternType", "literal") == "literal" and r["name"] == name) or \
                (r.get("patternType") == "prefix" and name.startswith(r["name"])) or r["name"] == "*":
            ops |= set(acl.get("operations", [acl.get("operation")]))
    return ops


def kafka_problems(tmp: Path, docs: list[dict] = ALL) -> list[str]:
    """The topic is the one every config names, with the aggregator's partitions and room for the
    largest batch; each component's KafkaUser may do what it needs and no more."""
    problems = []
    configs = all_configs(tmp)
    kafkas = [s.transport.kafka for _, s in configs]
    topics = {k.topic for k in kafkas}
    kt = find("KafkaTopic", docs)
    if len(kt) != 1:
        return [f"{len(kt)} KafkaTopic objects, expected 1"]
    t = kt[0]["spec"]
    name = t.get("topicName", kt[0]["metadata"]["name"])
    if topics != {name}:
        problems.append(f"KafkaTopic {name} is not the configs' topic {topics}")
    for component, s in configs:
        if component == "loglake-aggregator":
            if t["partitions"] != s.transport.kafka.partitions:
                problems.append(f"KafkaTopic partitions {t['partitions']} != [kafka] partitions "
                                f"{s.transport.kafka.partitions}")
            if t["replicas"] != s.transport.kafka.replication_factor:
                problems.append(f"KafkaTopic replicas {t['replicas']} != replication_factor "
                                f"{s.transport.kafka.replication_factor}")
    if int(t.get("config", {}).get("max.message.bytes", 1048588)) < max(k.max_message_bytes for k in kafkas):
        problems.append("KafkaTopic max.message.bytes is below a config's max_message_bytes")
    if not 1 < int(t.get("config", {}).get("min.insync.replicas", 1)) < t["replicas"] + 1:
        problems.append("min.insync.replicas must be 2 or more (acks=all) and at most replicas")
    users = kafka_users(docs)
    valid_ops = {"Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "AlterConfigs",
                 "DescribeConfigs", "IdempotentWrite", "All"}
    for u in users.values():
        if u["spec"].get("authentication", {}).get("type") != "tls":
            problems.append(f"KafkaUser {u['metadata']['name']}: authentication is not tls (the configs use mTLS)")
        if u["spec"].get("authorization", {}).get("type") != "simple":
            problems.append(f"KafkaUser {u['metadata']['name']}: authorization is not simple")
        for acl in u["spec"].get("authorization", {}).get("acls", []):
            if not set(acl.get("operations", [])) <= valid_ops or acl["resource"]["type"] not in \
                    ("topic", "group", "cluster", "transactionalId"):
                problems.append(f"KafkaUser {u['metadata']['name']}: ACL {acl} is not a Strimzi ACL")
    for w in WORKLOADS:
        for c, component in w.loglake():
            text, _ = embedded_config(w, c)
            s = load_config(component, text, container_env(c), tmp)
            user = users.get(tls_user(w, c) or "")
            if user is None:
                problems.append(f"{w.name}/{c['name']}: presents no KafkaUser's certificate")
                continue
            uname, topic = user["metadata"]["name"], s.transport.kafka.topic
            on_topic = acl_ops(user, "topic", topic)
            if component == "loglake-shipper":
                if "Write" not in on_topic:
                    problems.append(f"KafkaUser {uname}: no Write on {topic} (the shipper produces)")
                if on_topic - {"Write", "Describe"} or any(a["resource"]["type"] != "topic"
                                                          for a in user["spec"]["authorization"]["acls"]):
                    problems.append(f"KafkaUser {uname}: more than Write and Describe on {topic}")
            else:
                group = s.aggregator.group_id
                if "Read" not in on_topic:
                    problems.append(f"KafkaUser {uname}: no Read on {topic} (the aggregator consumes)")
                if "Read" not in acl_ops(user, "group", group):
                    problems.append(f"KafkaUser {uname}: no Read on group {group} (its consumer group)")
                if on_topic - {"Read", "Describe"}:
                    problems.append(f"KafkaUser {uname}: more than Read and Describe on {topic}")
    return problems


# tests: the objects ----------------------------------------------------------------------------

def test_manifests_are_found():
    assert {"shipper-daemonset.yaml", "shipper-sidecar.yaml", "aggregator.yaml", "strimzi/kafka-topic-users.yaml",
            "prometheus-operator/monitors.yaml"} <= set(DOCS)
    assert {w.doc["kind"] for w in WORKLOADS} == {"DaemonSet", "Job", "StatefulSet"}


def test_every_object_is_checked_by_a_schema_or_our_rules():
    unchecked = [ident(d) for d in ALL if not is_core(d) and (d["apiVersion"], d["kind"]) not in CUSTOM_KINDS]
    assert unchecked == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("doc", [d for d in ALL if is_core(d)], ids=ident)
def test_core_objects_match_the_kubernetes_schema(doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_no_secret_is_in_the_manifests():
    assert find("Secret") == []
    text = "\n".join(p.read_text() for p in MANIFESTS)
    assert "BEGIN" not in text and "PRIVATE KEY" not in text


def test_workload_selectors_match_their_pods():
    for w in WORKLOADS:
        if w.doc["kind"] in ("DaemonSet", "StatefulSet", "Deployment"):
            sel = w.doc["spec"]["selector"]["matchLabels"]
            assert sel.items() <= w.labels.items(), w.name


# tests: our rules, on every workload -----------------------------------------------------------

@pytest.mark.parametrize("name", sorted(W))
def test_probes_point_at_served_paths_and_ports(name, tmp_path):
    assert probe_problems(W[name], tmp_path) == []


@pytest.mark.parametrize("name", sorted(W))
def test_prometheus_can_scrape_every_component(name, tmp_path):
    assert scrape_problems(W[name], tmp_path) == []


@pytest.mark.parametrize("name", sorted(W))
def test_volumes_are_declared_and_secrets_known(name):
    assert volume_problems(W[name]) == []


@pytest.mark.parametrize("name", sorted(W))
def test_embedded_configs_load_and_fit_the_pod(name, tmp_path):
    assert W[name].loglake(), "a workload without a loglake container"
    assert config_problems(W[name], tmp_path) == []


@pytest.mark.parametrize("name", sorted(W))
def test_images_are_the_dockerfiles(name):
    assert image_problems(W[name]) == []


def test_manifests_name_the_dockerfile_and_it_builds_their_image():
    docker = (ROOT / "Dockerfile").read_text()
    assert f'org.opencontainers.image.version="{VERSION}"' in docker
    assert f"docker build -t {IMAGE} ." in docker
    for w in WORKLOADS:
        assert f"docker build -t {IMAGE} ." in (K8S / w.file).read_text(), w.file


@pytest.mark.parametrize("name", sorted(W))
def test_security_contexts(name):
    assert security_problems(W[name]) == []


def test_pods_without_host_files_meet_pod_security_restricted():
    checked = sorted(w.name for w in WORKLOADS if not host_path(w))
    assert checked == ["billing-invoices", "loglake-aggregator"]
    for name in checked:
        assert restricted_problems(W[name]) == [], name


def test_namespaces_enforce_the_pod_security_level_their_pods_need():
    for w in WORKLOADS:
        ns = find_one("Namespace", w.namespace)
        if ns is None:
            continue  # the application's own namespace (billing)
        level = ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce")
        assert level == ("privileged" if host_path(w) else "restricted"), (w.name, level)
    # the privileged namespace says why (hostPath) in the comment above its label
    text = (K8S / "shipper-daemonset.yaml").read_text()
    why = text.split("pod-security.kubernetes.io/enforce: privileged")[0].rsplit("kind: Namespace", 1)[1]
    assert "hostPath" in why


# tests: each component ---------------------------------------------------------------------------

LOG_DIRS = ("/var/log/containers", "/var/log/pods", "/var/lib/docker/containers")


def daemonset_problems(w: Workload, docs: list[dict] = ALL) -> list[str]:
    """kubelet's symlinks, the pod log files they point to and Docker's json-file logs, each from
    the node and read-only; an own ServiceAccount without a token."""
    problems = []
    (c, _), = w.loglake()
    host = {v["hostPath"]["path"]: v["name"] for v in w.pod["volumes"] if "hostPath" in v}
    for path in LOG_DIRS:
        m = mount_for(c, path)
        if m is None or m["mountPath"] != path or host.get(path) != m["name"]:
            problems.append(f"{path} is not mounted from the node at the same path")
        elif m.get("readOnly") is not True:
            problems.append(f"{path} is mounted writable")
    sa = find_one("ServiceAccount", w.pod.get("serviceAccountName", "default"), w.namespace, docs)
    if sa is None:
        problems.append("no ServiceAccount of its own in the manifests")
    else:
        if sa.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount {sa['metadata']['name']} mounts a token")
        users = [x.name for x in workloads({"": docs}) if x.pod.get("serviceAccountName") == sa["metadata"]["name"]]
        if users != [w.name]:
            problems.append(f"ServiceAccount {sa['metadata']['name']} is shared with {users}")
    return problems


def test_daemonset_reads_every_log_directory_read_only_with_its_own_token_less_account():
    assert daemonset_problems(W["loglake-shipper"]) == []


@pytest.mark.parametrize("change, expected", [
    (lambda w: next(m for m in w.pod["containers"][0]["volumeMounts"] if m["name"] == "varlogpods").pop("readOnly"),
     "/var/log/pods is mounted writable"),
    (lambda w: w.pod["containers"][0].update(volumeMounts=[
        m for m in w.pod["containers"][0]["volumeMounts"] if m["name"] != "dockercontainers"]),
     "/var/lib/docker/containers is not mounted from the node"),
    (lambda w: w.pod.pop("serviceAccountName"), "no ServiceAccount of its own"),
])
def test_a_daemonset_without_its_log_mounts_or_account_is_caught(change, expected):
    w = by_name("loglake-shipper")
    change(w)
    docs = [d for d in ALL if d["kind"] != "DaemonSet"] + [w.doc]
    assert any(expected in p for p in daemonset_problems(w, docs)), daemonset_problems(w, docs)


def test_a_wrong_scrape_annotation_is_caught(tmp_path):
    w = by_name("billing-invoices")
    w.template["metadata"]["annotations"]["prometheus.io/port"] = "8080"
    w.template["metadata"]["annotations"]["prometheus.io/path"] = "/stats"
    problems = scrape_problems(w, tmp_path)
    assert any("prometheus.io/port 8080 is not a metrics port" in p for p in problems), problems
    assert any("prometheus.io/path /stats is not /metrics" in p for p in problems), problems


def test_sidecar_is_native_and_takes_its_identity_from_the_downward_api(tmp_path):
    assert sidecar_problems(W["billing-invoices"], tmp_path) == []


def test_aggregator_keeps_the_lake_on_its_claim_and_the_key_in_a_secret(tmp_path):
    w = W["loglake-aggregator"]
    (c, _), = w.loglake()
    text, _ = embedded_config(w, c)
    s = load_config("loglake-aggregator", text, container_env(c), tmp_path)
    m = mount_for(c, str(s.aggregator.data_dir))
    claims = {t["metadata"]["name"] for t in w.doc["spec"]["volumeClaimTemplates"]}
    assert m["name"] in claims and not m.get("readOnly")
    # the master key is neither in the ConfigMap nor a file on a Secret volume: it comes from the environment
    assert not {"master_key", "master_key_command", "key_file"} & set(tomllib.loads(text)["aggregator"])
    assert s.aggregator.master_key == container_env(c)["LOGLAKE_AGGREGATOR_MASTER_KEY"]
    key = {e["name"]: e for e in c["env"]}["LOGLAKE_AGGREGATOR_MASTER_KEY"]
    assert key["valueFrom"]["secretKeyRef"]["name"] in EXTERNAL_SECRETS
    assert "loglake-master-key" in (K8S / w.file).read_text().split("apiVersion:")[0]  # documented in the header
    # the StatefulSet's Service is headless and reaches the metrics port
    svc = find_one("Service", w.doc["spec"]["serviceName"], w.namespace)
    assert svc is not None and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= w.labels.items()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for p in svc["spec"]["ports"]:
        assert ports.get(p["targetPort"], p["targetPort"]) == PORTS["loglake-aggregator"]


def test_each_component_serves_on_its_port(tmp_path):
    for w in WORKLOADS:
        for c, component in w.loglake():
            assert served_port(w, c, component, tmp_path) == PORTS[component], (w.name, c["name"])


def test_strimzi_topic_and_users_match_the_configs(tmp_path):
    assert kafka_problems(tmp_path) == []


def test_prometheus_operator_monitors_select_the_pods_and_ports():
    pm, = find("PodMonitor")
    shippers = [w for w in WORKLOADS if any(comp == "loglake-shipper" for _, comp in w.loglake())]
    assert len(shippers) == 2
    for w in shippers:
        assert pm["spec"]["selector"]["matchLabels"].items() <= w.labels.items(), w.name
        for ep in pm["spec"]["podMetricsEndpoints"]:
            assert ep["path"] in ENDPOINTS
            assert any(ep["port"] in {p.get("name") for p in c.get("ports", [])} for c, _ in w.loglake())
    assert pm["spec"]["namespaceSelector"] == {"any": True}  # the sidecars live in the apps' namespaces
    sm, = find("ServiceMonitor")
    svcs = [s for s in find("Service") if s["metadata"]["namespace"] == sm["metadata"]["namespace"]
            and sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]
    assert len(svcs) == 1
    for ep in sm["spec"]["endpoints"]:
        assert ep["path"] == METRICS and ep["port"] in {p["name"] for p in svcs[0]["spec"]["ports"]}


@pytest.mark.parametrize("name", ["shipper-daemonset.yaml", "shipper-sidecar.yaml"])
def test_manifest_config_loads(tmp_path, name):
    (cm,) = [d for d in DOCS[name] if d["kind"] == "ConfigMap"]
    cfg = tmp_path / "loglake.toml"
    cfg.write_text(cm["data"]["loglake.toml"])
    s = shipper_config.load(str(cfg), {"LOGLAKE_SHIPPER_NODE_NAME": "node-7"})
    assert s.shipper.node_name == "node-7"
    assert s.transport.kafka is not None and s.transport.kafka.topic == "loglake.logs"
    assert s.shipper.metrics_address.endswith(":2020")
    assert s.shipper.tls_cert_file == Path("/etc/loglake/tls/tls.crt")


def test_sidecar_names_its_node_and_gives_the_pod_uid_its_identity_needs(tmp_path):
    """Every sidecar reads the same path: the pod's uid (LOGLAKE_K8S_POD_UID) keeps two pods' sources apart
    (tests/test_enrich.py shows it through the real shipper), so node_name can be the node's own."""
    from shipper.enrich import sidecar_pod_uid
    w = W["billing-invoices"]
    (c, _), = w.loglake()
    text, _ = embedded_config(w, c)
    env = container_env(c)
    s = load_config("loglake-shipper", text, env, tmp_path)
    assert s.shipper.node_name == FIELD_SAMPLES["spec.nodeName"]
    assert sidecar_pod_uid(env) == FIELD_SAMPLES["metadata.uid"]


# negative tests: each rule catches what it is for ------------------------------------------------

def loglake_container(w: Workload) -> dict:
    return w.loglake()[0][0]


@pytest.mark.parametrize("change, expected", [
    (lambda c: c["livenessProbe"]["httpGet"].update(path="/health"), "livenessProbe path /health is not served"),
    (lambda c: c["readinessProbe"]["httpGet"].update(path=LIVENESS), "readinessProbe on /healthz, not /readyz"),
    (lambda c: c["livenessProbe"]["httpGet"].update(port=9999), "livenessProbe port 9999 is not the metrics"),
    (lambda c: c["readinessProbe"]["httpGet"].update(port="metric"), "port 'metric' names no port"),
    (lambda c: c.pop("readinessProbe"), "no readinessProbe"),
    (lambda c: c["ports"][0].update(containerPort=c["ports"][0]["containerPort"] + 1), "no container port named"),
])
def test_a_wrong_probe_is_caught(tmp_path, change, expected):
    for name in ("loglake-shipper", "billing-invoices", "loglake-aggregator"):
        w = by_name(name)
        change(loglake_container(w))
        problems = probe_problems(w, tmp_path)
        assert any(expected in p for p in problems), (name, problems)


def test_a_config_serving_another_port_is_caught(tmp_path):
    docs = copy.deepcopy(ALL)
    cm = find_one("ConfigMap", "loglake-shipper", "loglake", docs)
    cm["data"]["loglake.toml"] = cm["data"]["loglake.toml"].replace("0.0.0.0:2020", "0.0.0.0:2030")
    problems = probe_problems(W["loglake-shipper"], tmp_path, docs)
    assert any("is not the metrics_address port 2030" in p for p in problems), problems


def test_a_missing_volume_is_caught():
    w = by_name("loglake-aggregator")
    loglake_container(w)["volumeMounts"].append({"name": "scratch", "mountPath": "/scratch"})
    assert "aggregator: volumeMount scratch names no declared volume" in volume_problems(w)
    w = by_name("loglake-shipper")
    w.pod["volumes"] = [v for v in w.pod["volumes"] if v["name"] != "dockercontainers"]
    assert "shipper: volumeMount dockercontainers names no declared volume" in volume_problems(w)


def test_a_missing_configmap_or_unknown_secret_is_caught():
    w = by_name("billing-invoices")
    (v,) = [v for v in w.pod["volumes"] if v["name"] == "config"]
    v["configMap"]["name"] = "billing-loglake-old"
    assert any("billing-loglake-old is not in the manifests" in p for p in volume_problems(w))
    w = by_name("loglake-aggregator")
    (v,) = [v for v in w.pod["volumes"] if v["name"] == "tls"]
    v["projected"]["sources"][0]["secret"]["name"] = "aggregator-tls"
    v["projected"]["sources"][1]["secret"]["items"][0]["key"] = "tls.crt"
    problems = volume_problems(w)
    assert any("Secret aggregator-tls is neither" in p for p in problems), problems
    assert any("kafka-cluster-ca-cert has no key tls.crt" in p for p in problems), problems


@pytest.mark.parametrize("old, new, expected", [
    ('group_id = "loglake-aggregator"', 'group = "loglake-aggregator"', "config does not load: unknown key(s) group"),
    ('data_dir = "/var/lib/loglake"', 'data_dir = "/etc/loglake/lake"', "is not on a writable volume"),
    ('tls_key_file = "/etc/loglake/tls/tls.key"', 'tls_key_file = "/secrets/tls.key"', "/secrets/tls.key is on no"),
    ('metrics_address = "0.0.0.0:2021"', 'metrics_address = "127.0.0.1:2021"', "is not reachable from outside"),
])
def test_a_config_that_does_not_fit_the_pod_is_caught(tmp_path, old, new, expected):
    docs = copy.deepcopy(ALL)
    cm = find_one("ConfigMap", "loglake-aggregator", "loglake-aggregator", docs)
    assert old in cm["data"]["loglake.toml"]
    cm["data"]["loglake.toml"] = cm["data"]["loglake.toml"].replace(old, new)
    problems = config_problems(W["loglake-aggregator"], tmp_path, docs)
    assert any(expected in p for p in problems), problems


def test_a_shipper_include_outside_its_mounts_is_caught(tmp_path):
    docs = copy.deepcopy(ALL)
    cm = find_one("ConfigMap", "loglake-shipper", "loglake", docs)
    cm["data"]["loglake.toml"] = cm["data"]["loglake.toml"].replace(
        'include = ["/var/log/containers/*.log"]', 'include = ["/var/log/containers/*.log", "/var/log/syslog*"]')
    assert any("include /var/log/syslog* is on no mounted volume" in p
               for p in config_problems(W["loglake-shipper"], tmp_path, docs))


def test_a_foreign_image_is_caught():
    w = by_name("loglake-aggregator")
    loglake_container(w)["image"] = "loglake:latest"
    loglake_container(w)["args"][0] = "loglake-aggregatord"
    problems = image_problems(w)
    assert len(problems) == 2 and "not loglake:" in problems[0] and "entry points" in problems[1]


@pytest.mark.parametrize("change, expected", [
    (lambda w, c: c["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "capabilities are not drop: [ALL]"),
    (lambda w, c: c["securityContext"].update(readOnlyRootFilesystem=False), "root filesystem is writable"),
    (lambda w, c: c["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation is not false"),
    (lambda w, c: w.pod["securityContext"].pop("seccompProfile"), "seccompProfile is not RuntimeDefault"),
    (lambda w, c: w.pod["securityContext"].update(runAsUser=0), "may run as root but reads no host files"),
    # the Job's pod runs as the namespace's default ServiceAccount, whose token is mounted unless the pod says not
    (lambda w, c: w.pod.pop("automountServiceAccountToken"), "the pod gets an API token"),
    (lambda w, c: w.pod.pop("enableServiceLinks"), "enableServiceLinks is not false"),
])
def test_a_weaker_security_context_is_caught(change, expected):
    w = by_name("billing-invoices")
    change(w, loglake_container(w))
    problems = security_problems(w)
    assert any(expected in p for p in problems), problems


def test_a_service_account_with_a_token_is_caught():
    docs = copy.deepcopy(ALL)
    find_one("ServiceAccount", "loglake-shipper", "loglake", docs)["automountServiceAccountToken"] = True
    assert "the pod gets an API token (automountServiceAccountToken is not false)" in \
        security_problems(W["loglake-shipper"], docs)


def test_a_pod_breaking_restricted_is_caught():
    w = by_name("loglake-aggregator")
    w.pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    w.pod["containers"][0]["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    problems = restricted_problems(w)
    assert "volume host of type ['hostPath']" in problems and "aggregator: capabilities do not drop ALL" in problems
    assert restricted_problems(W["loglake-shipper"]) != []  # it is in the privileged namespace for a reason


@pytest.mark.parametrize("change, expected", [
    (lambda w: w.pod["containers"].append(w.pod.pop("initContainers")[0]), "not an init container"),
    (lambda w: w.pod["initContainers"][0].pop("restartPolicy"), "not an init container with restartPolicy"),
    (lambda w: w.pod["initContainers"][0]["env"][0]["valueFrom"]["fieldRef"].update(fieldPath="metadata.name"),
     "LOGLAKE_K8S_NAMESPACE is not the Downward API's metadata.namespace"),
    (lambda w: w.pod["initContainers"][0]["env"][3].update(value="loglake-shipper"),
     "LOGLAKE_K8S_CONTAINER=loglake-shipper is not the container writing"),
])
def test_a_broken_sidecar_is_caught(tmp_path, change, expected):
    w = by_name("billing-invoices")
    change(w)
    problems = sidecar_problems(w, tmp_path)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("change, expected", [
    (lambda d: find_one("KafkaTopic", "loglake-logs", docs=d)["spec"].update(partitions=6),
     "KafkaTopic partitions 6 != [kafka] partitions 3"),
    (lambda d: find_one("KafkaTopic", "loglake-logs", docs=d)["spec"].update(topicName="logs"),
     "KafkaTopic logs is not the configs' topic"),
    (lambda d: find_one("KafkaTopic", "loglake-logs", docs=d)["spec"]["config"].update({"max.message.bytes": 1048576}),
     "max.message.bytes is below"),
    (lambda d: find_one("KafkaUser", "loglake-shipper", docs=d)["spec"]["authorization"]["acls"][0].update(
        operations=["Describe"]), "KafkaUser loglake-shipper: no Write on loglake.logs"),
    (lambda d: find_one("KafkaUser", "billing-loglake", docs=d)["spec"]["authorization"]["acls"][0].update(
        operations=["Write", "Read"]), "KafkaUser billing-loglake: more than Write and Describe"),
    (lambda d: find_one("KafkaUser", "loglake-aggregator", docs=d)["spec"]["authorization"]["acls"][1][
        "resource"].update(name="loglake"), "no Read on group loglake-aggregator"),
    (lambda d: find_one("KafkaUser", "loglake-aggregator", docs=d)["spec"]["authorization"]["acls"][0].update(
        operations=["Read", "Write"]), "KafkaUser loglake-aggregator: more than Read and Describe"),
    (lambda d: find_one("KafkaUser", "loglake-aggregator", docs=d)["spec"]["authentication"].update(
        type="scram-sha-512"), "authentication is not tls"),
])
def test_wrong_kafka_resources_are_caught(tmp_path, change, expected):
    docs = copy.deepcopy(ALL)
    change(docs)
    problems = kafka_problems(tmp_path, docs)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("change", [
    lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(readOnlyRootFilesytem=True),
    lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(containerPort="2021"),
    lambda d: d["spec"]["template"]["spec"]["volumes"][0].update(configMap={"nam": "x"}),
    lambda d: d["spec"].pop("selector"),
])
def test_the_schema_check_catches_what_a_cluster_would_refuse(change):
    doc = copy.deepcopy(W["loglake-aggregator"].doc)
    change(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)
