"""Kubernetes metadata from where kubelet writes a container's log.

    /var/log/pods/<namespace>_<pod>_<pod-uid>/<container>/<restart>.log
    /var/log/containers/<pod>_<namespace>_<container>-<container-id>.log   (symlink to the above)
    /var/lib/docker/containers/<container-id>/<container-id>-json.log       (Docker json-file: the id only)

Namespaces and pod names cannot contain '_', which makes both forms unambiguous.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_PODS = re.compile(r"/(?P<ns>[^/_]+)_(?P<pod>[^/_]+)_(?P<uid>[0-9a-fA-F-]+)/(?P<container>[^/]+)/\d+\.log(?:\.[^/]*)?$")
_DOCKER = re.compile(r"/(?P<cid>[0-9a-f]{64})/(?P=cid)-json\.log(?:\.\d+)?$")
_CONTAINERS = re.compile(r"/(?P<pod>[^/_]+)_(?P<ns>[^/_]+)_(?P<container>[^/]+)-(?P<cid>[0-9a-f]{64})\.log$")


@dataclass(frozen=True, slots=True)
class K8sMeta:
    namespace: str | None = None
    pod: str | None = None
    pod_uid: str | None = None
    container: str | None = None
    container_id: str | None = None


def display_path(path: str) -> str:
    """``path`` as valid text: bytes of a file name that are not UTF-8 (held by Python as lone
    surrogates) become U+FFFD, so the name can go into records, checkpoints and logs. The file
    itself is still opened by its real name."""
    try:
        path.encode()
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "replace")


def from_path(path: str) -> K8sMeta:
    """Metadata from a log path; a /var/log/containers symlink is followed for the pod UID.
    A name that is not valid UTF-8 is read as its displayable form (see display_path)."""
    real, path = path, display_path(path)
    m = _CONTAINERS.search(path)
    if m:
        target = _PODS.search(display_path(os.path.realpath(real)))
        return K8sMeta(m["ns"], m["pod"], target["uid"] if target else None, m["container"], m["cid"])
    m = _PODS.search(path)
    if m:
        return K8sMeta(m["ns"], m["pod"], m["uid"], m["container"], None)
    m = _DOCKER.search(path)
    return K8sMeta(container_id=m["cid"]) if m else K8sMeta()
