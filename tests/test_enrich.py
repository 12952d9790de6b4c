"""Kubernetes metadata from kubelet's log paths."""

from __future__ import annotations

import os

from shipper.enrich import K8sMeta, from_path

UID = "8c1a2b3c-1111-4222-8333-944455556666"
CID = "a" * 64


def test_pods_path():
    assert from_path(f"/var/log/pods/shop_checkout-5d8f7-abcde_{UID}/app/0.log") == \
        K8sMeta("shop", "checkout-5d8f7-abcde", UID, "app", None)


def test_containers_symlink_gives_container_id_and_uid(tmp_path):
    target = tmp_path / "pods" / f"shop_web-1_{UID}" / "nginx" / "3.log"
    target.parent.mkdir(parents=True)
    target.write_text("")
    link = tmp_path / "containers" / f"web-1_shop_nginx-{CID}.log"
    link.parent.mkdir()
    os.symlink(target, link)
    assert from_path(str(link)) == K8sMeta("shop", "web-1", UID, "nginx", CID)


def test_other_paths_have_no_metadata():
    assert from_path("/var/log/syslog") == K8sMeta()
