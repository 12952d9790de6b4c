"""Kubernetes and container metadata from where a container's log is, and from beside it.

    /var/log/pods/<namespace>_<pod>_<pod-uid>/<container>/<restart>.log
    /var/log/containers/<pod>_<namespace>_<container>-<container-id>.log   (symlink to the above)
    /var/lib/docker/containers/<container-id>/<container-id>-json.log       (Docker json-file: the id only)

Namespaces and pod names cannot contain '_', which makes both forms unambiguous.
``<restart>`` is the container's restart count (kubelet starts a new file for
every restart of the container), so ``0.log`` and ``1.log`` are two runs of it.

A Docker json-file log has the container's ``config.v2.json`` beside it: its
``Name`` and ``Config.Labels`` become the container's name and labels, and
Docker's Kubernetes labels (``io.kubernetes.pod.namespace``,
``io.kubernetes.pod.name``, ``io.kubernetes.pod.uid``,
``io.kubernetes.container.name``, and the restart count in
``annotation.io.kubernetes.container.restartCount``) fill in what the path does
not say. The file is the runtime's, not ours: it is read only if it is a
regular file (no symlink is followed), at most ``DOCKER_CONFIG_MAX_BYTES``, and
once per container until it changes; one that cannot be used is a warning and
``K8sMeta.problem`` (the shipper counts it), never a reason not to ship the
lines.

A shipper running as a sidecar tails files whose paths say nothing about the
pod: there the Downward API gives the pod's identity as environment variables
(``SIDECAR_ENV``), which records of its files carry whatever their paths or a
config.v2.json beside them claim. The node comes from ``[shipper] node_name``.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from dataclasses import dataclass, replace

import orjson

log = logging.getLogger("loglake.shipper")

_PODS = re.compile(r"/(?P<ns>[^/_]+)_(?P<pod>[^/_]+)_(?P<uid>[0-9a-fA-F-]+)/(?P<container>[^/]+)/"
                   r"(?P<restart>\d+)\.log(?:\.[^/]*)?$")
_DOCKER = re.compile(r"/(?P<cid>[0-9a-f]{64})/(?P=cid)-json\.log(?:\.\d+)?$")
_CONTAINERS = re.compile(r"/(?P<pod>[^/_]+)_(?P<ns>[^/_]+)_(?P<container>[^/]+)-(?P<cid>[0-9a-f]{64})\.log$")

# The Downward API's values for a sidecar (deploy/k8s/shipper-sidecar.yaml), by K8sMeta field. Their prefix is
# no config section ([k8s] does not exist) and no kubelet service link ends like these, so runtime.config
# neither reads nor refuses them.
SIDECAR_ENV = {"namespace": "LOGLAKE_K8S_NAMESPACE", "pod": "LOGLAKE_K8S_POD",
               "pod_uid": "LOGLAKE_K8S_POD_UID", "container": "LOGLAKE_K8S_CONTAINER"}
# Docker writes config.v2.json itself; a few KiB, more with many environment variables or mounts.
DOCKER_CONFIG_MAX_BYTES = 4 * 1024 * 1024
# Labels go into every record of the container's files (schemas.record ``resource``): beyond this many
# bytes of them the rest (in name order) are left out, with a warning.
LABELS_MAX_BYTES = 8 * 1024
# Kind of error the shipper counts (errors_total{kind}) for a file whose container config could not be used.
DOCKER_CONFIG_ERROR = "docker_config"
_K8S_LABELS = {"namespace": "io.kubernetes.pod.namespace", "pod": "io.kubernetes.pod.name",
               "pod_uid": "io.kubernetes.pod.uid", "container": "io.kubernetes.container.name"}
_RESTART_LABEL = "annotation.io.kubernetes.container.restartCount"


@dataclass(frozen=True, slots=True)
class K8sMeta:
    namespace: str | None = None
    pod: str | None = None
    pod_uid: str | None = None
    container: str | None = None
    container_id: str | None = None
    restart_count: int | None = None      # kubelet's N.log, or Docker's restartCount label
    container_name: str | None = None     # the runtime's name for the container (Docker's Name)
    labels: tuple[tuple[str, str], ...] = ()  # the container's labels (Docker's Config.Labels), by name
    problem: str | None = None            # why the runtime's metadata beside the log could not be used

    def resource(self) -> dict[str, object]:
        """OpenTelemetry resource attributes of the file's records (schemas.record ``resource``)."""
        out: dict[str, object] = {}
        if self.restart_count is not None:
            out["k8s.container.restart_count"] = self.restart_count
        if self.container_name is not None:
            out["container.name"] = self.container_name
        out.update((f"container.label.{k}", v) for k, v in self.labels)
        return out


@dataclass(frozen=True, slots=True)
class DockerConfig:
    name: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    problem: str | None = None


def display_path(path: str) -> str:
    """``path`` as valid text: bytes of a file name that are not UTF-8 (held by Python as lone
    surrogates) become U+FFFD, so the name can go into records, checkpoints and logs. The file
    itself is still opened by its real name."""
    try:
        path.encode()
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "replace")


def from_path(path: str, env: Mapping[str, str] | None = None) -> K8sMeta:
    """Metadata of the log file at ``path``: from the path (a /var/log/containers symlink is followed for
    the pod UID and restart count) and from Docker's config.v2.json beside a json-file log; for a sidecar,
    from its environment (``env``, default ``os.environ``) alone.
    A name that is not valid UTF-8 is read as its displayable form (see display_path).

    A sidecar (its environment names the pod) reads only its own pod's files: the environment is the
    pod's identity, whatever a file's name or a planted config.v2.json claims (an app can name a file
    like another tenant's kubelet log)."""
    env = os.environ if env is None else env
    if is_sidecar(env):
        return _with_sidecar(K8sMeta(), env)
    real, path = path, display_path(path)
    target = os.path.realpath(real)
    m = _CONTAINERS.search(path)
    if m:
        pods = _PODS.search(display_path(target))
        meta = K8sMeta(m["ns"], m["pod"], pods["uid"] if pods else None, m["container"], m["cid"],
                       restart_count=int(pods["restart"]) if pods else None)
    elif m := _PODS.search(path):
        meta = K8sMeta(m["ns"], m["pod"], m["uid"], m["container"], None, restart_count=int(m["restart"]))
    else:
        meta = K8sMeta()
    # Docker's json-file log, named as such or the target of kubelet's links (dockershim)
    docker = _DOCKER.search(path) or _DOCKER.search(display_path(target))
    if docker:
        directory = os.path.dirname(real if _DOCKER.search(path) else target)
        meta = _with_docker(meta, docker["cid"], docker_config(directory))
    return meta


def _with_docker(meta: K8sMeta, cid: str, config: DockerConfig) -> K8sMeta:
    """The path's metadata, with what the container's config says where the path says nothing."""
    labels = dict(config.labels)
    known = {f: getattr(meta, f) or labels.get(label) or None for f, label in _K8S_LABELS.items()}
    restart = meta.restart_count
    if restart is None and labels.get(_RESTART_LABEL, "").isdigit():
        restart = int(labels[_RESTART_LABEL])
    return replace(meta, **known, container_id=meta.container_id or cid, restart_count=restart,
                   container_name=config.name, labels=config.labels, problem=config.problem)


def is_sidecar(env: Mapping[str, str] | None = None) -> bool:
    """Whether the shipper runs as a sidecar: its environment names the pod (the Downward API)."""
    env = os.environ if env is None else env
    return any(env.get(name, "").strip() for name in SIDECAR_ENV.values())


def sidecar_pod_uid(env: Mapping[str, str] | None = None) -> str | None:
    """The pod's uid when the shipper runs as a sidecar (from the Downward API), else None."""
    return (os.environ if env is None else env).get(SIDECAR_ENV["pod_uid"], "").strip() or None


def _with_sidecar(meta: K8sMeta, env: Mapping[str, str]) -> K8sMeta:
    values: dict[str, Any] = {f: env.get(name, "").strip() or None for f, name in SIDECAR_ENV.items()}
    return replace(meta, **values) if any(values.values()) else meta


# container directory -> ((dev, ino, size, mtime_ns) of its config.v2.json, what it said)
_configs: OrderedDict[str, tuple[tuple[int, int, int, int] | None, DockerConfig]] = OrderedDict()
_CACHE_MAX = 4096


def docker_config(directory: str) -> DockerConfig:
    """``<directory>/config.v2.json``: the container's name and labels. Read once and again only when
    the file changes (size, mtime or inode); a missing one says nothing, an unusable one (a symlink, not
    a regular file, larger than DOCKER_CONFIG_MAX_BYTES, not Docker's JSON) is logged and has a
    ``problem``."""
    path = os.path.join(directory, "config.v2.json")
    try:
        st = os.lstat(path)
        stamp: tuple[int, int, int, int] | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    except FileNotFoundError:
        stamp = None
    except OSError as e:
        stamp = (-1, -1, -1, e.errno or 0)
    cached = _configs.get(directory)
    if cached is not None and cached[0] == stamp:
        _configs.move_to_end(directory)
        return cached[1]
    config = DockerConfig() if stamp is None else _read_config(path)
    _configs[directory] = (stamp, config)
    if len(_configs) > _CACHE_MAX:
        _configs.popitem(last=False)
    return config


def _problem(path: str, why: str) -> DockerConfig:
    log.warning("container config not used: its lines are shipped without the container's name and labels",
                extra={"path": display_path(path), "reason": why})
    return DockerConfig(problem=why)


def _read_config(path: str) -> DockerConfig:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        why = "a symlink (not followed)" if os.path.islink(path) else f"cannot be opened ({e.strerror})"
        return _problem(path, why)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _problem(path, "not a regular file")
        if st.st_size > DOCKER_CONFIG_MAX_BYTES:
            return _problem(path, f"{st.st_size} bytes, more than {DOCKER_CONFIG_MAX_BYTES}")
        data = os.read(fd, DOCKER_CONFIG_MAX_BYTES + 1)
    except OSError as e:
        return _problem(path, f"cannot be read ({e.strerror})")
    finally:
        os.close(fd)
    if len(data) > DOCKER_CONFIG_MAX_BYTES:
        return _problem(path, f"more than {DOCKER_CONFIG_MAX_BYTES} bytes")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _problem(path, "not valid JSON")
    inner = doc.get("Config") if isinstance(doc, dict) else None
    name, labels = (doc.get("Name"), (inner or {}).get("Labels")) if isinstance(doc, dict) else (None, None)
    if (not isinstance(doc, dict) or not isinstance(inner, dict | None) or not isinstance(name, str | None)
            or not isinstance(labels, dict | None)
            or not all(isinstance(v, str) for v in (labels or {}).values())):
        return _problem(path, "not a Docker container config (Name, Config.Labels)")
    kept: list[tuple[str, str]] = []
    size = 0
    labels = labels or {}
    for k, v in sorted(labels.items()):
        size += len(k.encode()) + len(v.encode()) + 24  # with the "container.label." prefix, quotes and commas
        if size > LABELS_MAX_BYTES:
            log.warning("container labels cut: the rest are left out of its records",
                        extra={"path": display_path(path), "labels": len(labels), "kept": len(kept),
                               "max_bytes": LABELS_MAX_BYTES})
            break
        kept.append((k, v))
    return DockerConfig(name=name.removeprefix("/") or None if name else None, labels=tuple(kept))
