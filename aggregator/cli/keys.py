"""loglake-aggregator keys and certs: master key rotation, data key destruction, a development PKI."""

from __future__ import annotations

import argparse

from aggregator import certs, config
from aggregator.retention import Remover
from lake import keys
from lake.audit import AuditLog
from lake.catalog.base import open_catalog
from runtime.errors import ConfigError, EncryptionKeyError


def _keys(args: argparse.Namespace) -> None:
    cfg = config.load(args.config).aggregator
    catalog = open_catalog(cfg)
    audit = AuditLog.of(cfg, catalog)
    try:
        ring = keys.KeyRing(catalog, keys.master_for(cfg))
        if args.action == "rotate":
            if not args.new_key_file:
                raise ConfigError("keys rotate needs --new-key-file PATH (a new file for the new master key)")
            audit.ready()
            new = keys.new_master_file(args.new_key_file)
            count = ring.rotate(new)
            audit.append("keys-rotate", {"event": "master key rotated", "master_key": new.key_id,
                                         "previous": keys.master_for(cfg).key_id, "data_keys_rewrapped": count})
            print(f"rewrapped {count} data keys under {new.key_id}; point [aggregator] key_file at {args.new_key_file} "
                  "and keep the old key file until every aggregator and query host uses the new one")
        elif args.action == "destroy":
            if not args.key_id:
                raise ConfigError("keys destroy needs the KEY_ID to destroy")
            _destroy_key(config.load(args.config), ring, args.key_id, args.force)
        else:
            retired = catalog.retired_data_keys()
            for key_id, scope, master_id, destroyed in catalog.data_key_list():
                state = ("destroyed" if destroyed else f"retired ({retired[key_id]}), wrapped by {master_id}"
                         if key_id in retired else f"live, wrapped by {master_id}")
                print(f"{key_id}  {scope}  {state}")
    finally:
        catalog.close()


def _destroy_key(settings: config.Settings, ring: keys.KeyRing, key_id: str, force: bool) -> None:
    """Destroy a data key by hand. Files still encrypted with it go with it, but only with --force, and
    never files under a legal hold."""
    if ring.catalog.data_key(key_id) is None:
        raise ConfigError(f"there is no data key {key_id}; see 'loglake-aggregator keys list'")
    remover = Remover.open(settings, ring.master)
    try:
        plan = remover.key_destruction_plan(key_id)
        files = [d.entry for d in plan.decisions]
        if files and not force:
            raise ConfigError(f"data key {key_id} still encrypts {len(files)} files ({sum(f.rows for f in files)} "
                              f"records, e.g. {files[0].tier} {files[0].path}); pass --force to destroy them with it")
        if not files:
            remover.audit.ready()
            remover.keyring.destroy(key_id)
            remover.audit.append("keys-destroy", {"event": "data key destroyed by hand", "key_id": key_id})
        else:
            for f in files:
                print(f"unreadable from now on: {f.tier} {f.path} ({f.rows} records)")
            if key_id not in remover.apply(plan).keys_destroyed:
                raise EncryptionKeyError(f"data key {key_id} was retired, not destroyed: a file written with it "
                                         "meanwhile still needs it; run the command again")
    finally:
        remover.close()
    print(f"destroyed data key {key_id}: files written with it can no longer be read anywhere"
          + (f"; {len(files)} files and their records removed from the lake" if files else ""))


def _certs(args: argparse.Namespace) -> None:
    issued = certs.generate(args.out, force=args.force)
    for name, files in issued.items():
        print(f"{name}: {files.cert} {files.key}")
