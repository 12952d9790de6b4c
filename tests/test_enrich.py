"""Kubernetes and container metadata from kubelet's and Docker's log paths, Docker's config.v2.json, and
a sidecar's environment."""

from __future__ import annotations

import os

import orjson

from shipper.enrich import SIDECAR_ENV, K8sMeta, from_path

UID = "8c1a2b3c-1111-4222-8333-944455556666"
CID = "a" * 64
NO_ENV: dict[str, str] = {}


def test_pods_path_with_its_restart_count():
    assert from_path(f"/var/log/pods/shop_checkout-5d8f7-abcde_{UID}/app/0.log", NO_ENV) == \
        K8sMeta("shop", "checkout-5d8f7-abcde", UID, "app", None, restart_count=0)
    # a rotated file of the second restart is still the second restart's
    assert from_path(f"/var/log/pods/shop_web-1_{UID}/app/2.log.20261124-100000", NO_ENV).restart_count == 2


def test_containers_symlink_gives_container_id_uid_and_restart(tmp_path):
    target = tmp_path / "pods" / f"shop_web-1_{UID}" / "nginx" / "3.log"
    target.parent.mkdir(parents=True)
    target.write_text("")
    link = tmp_path / "containers" / f"web-1_shop_nginx-{CID}.log"
    link.parent.mkdir()
    os.symlink(target, link)
    assert from_path(str(link), NO_ENV) == K8sMeta("shop", "web-1", UID, "nginx", CID, restart_count=3)


def test_dockershim_links_end_in_dockers_log_and_its_config(tmp_path):
    # kubelet with Docker: /var/log/containers/… -> /var/log/pods/…/N.log -> Docker's json-file log
    docker = tmp_path / "docker" / "containers" / CID
    docker.mkdir(parents=True)
    (docker / f"{CID}-json.log").write_text("")
    (docker / "config.v2.json").write_bytes(orjson.dumps({"Name": "/k8s_nginx_web-1", "Config": {"Labels": {
        "io.kubernetes.pod.uid": "ignored-the-path-says", "team": "edge"}}}))
    pods = tmp_path / "pods" / f"shop_web-1_{UID}" / "nginx"
    pods.mkdir(parents=True)
    os.symlink(docker / f"{CID}-json.log", pods / "1.log")
    link = tmp_path / "containers" / f"web-1_shop_nginx-{CID}.log"
    link.parent.mkdir()
    os.symlink(pods / "1.log", link)
    meta = from_path(str(link), NO_ENV)
    # the path's own word wins; the config adds what the path cannot say
    assert (meta.namespace, meta.pod, meta.container, meta.container_id) == ("shop", "web-1", "nginx", CID)
    assert (meta.container_name, meta.labels, meta.problem) == ("k8s_nginx_web-1", (
        ("io.kubernetes.pod.uid", "ignored-the-path-says"), ("team", "edge")), None)
    assert meta.resource() == {"container.name": "k8s_nginx_web-1",
                               "container.label.io.kubernetes.pod.uid": "ignored-the-path-says",
                               "container.label.team": "edge"}


def test_docker_path_without_config_has_the_id_only(tmp_path):
    d = tmp_path / CID
    d.mkdir()
    (d / f"{CID}-json.log").write_text("")
    assert from_path(str(d / f"{CID}-json.log"), NO_ENV) == K8sMeta(container_id=CID)


def test_other_paths_have_no_metadata():
    assert from_path("/var/log/syslog", NO_ENV) == K8sMeta()


def test_a_sidecar_takes_the_pod_from_its_environment_whatever_a_path_claims():
    env = {SIDECAR_ENV["namespace"]: "billing", SIDECAR_ENV["pod"]: "billing-1", SIDECAR_ENV["pod_uid"]: UID,
           SIDECAR_ENV["container"]: "app", "LOGLAKE_K8S_POD_SERVICE_HOST": "10.0.0.1"}
    assert from_path("/var/log/app/billing.log", env) == K8sMeta("billing", "billing-1", UID, "app")
    # a file the app names like another tenant's kubelet log does not make its lines that tenant's
    assert from_path(f"/var/log/app/shop_web-1_{UID}/nginx/0.log", env) == K8sMeta("billing", "billing-1", UID, "app")
    assert from_path(f"/var/log/app/kube-apiserver-n1_kube-system_kube-apiserver-{'a' * 64}.log", env) == \
        K8sMeta("billing", "billing-1", UID, "app")
    # set but empty (a Downward API field the pod lacks) is not set
    assert from_path("/var/log/app/billing.log", {k: "" for k in SIDECAR_ENV.values()}) == K8sMeta()
