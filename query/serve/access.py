"""What an identity may do: the roles naming it, their permissions, and the rows each permission covers.

Deny by default. A permission is held through the roles that grant it, and covers the rows of those
roles' grants alone: a role with ``read`` on namespace ``shop`` and another with ``sql`` on ``pay`` give
``sql`` over ``pay`` only. The rows become one SQL condition that the ``logs`` relation itself applies
(query.connect ``restrict``), beneath every filter, aggregate and join a request adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from query.connect import Restriction
from query.serve.config import GrantConfig, ServeConfig
from query.serve.identity import Identity
from runtime.errors import Forbidden


@dataclass(frozen=True)
class Access:
    identity: Identity
    roles: tuple[str, ...]
    grants: dict[str, tuple[GrantConfig, ...]]     # permission -> grants of the roles holding it

    def rows(self, permission: str) -> Restriction:
        """The rows ``permission`` covers; Forbidden if no role grants it."""
        grants = self.grants.get(permission)
        if grants is None:
            held = ", ".join(sorted(self.grants)) or "none"
            raise Forbidden(f"{self.identity.how}:{self.identity.name} may not {permission} (permissions held: "
                            f"{held}); ask an operator for a role that grants it")
        # a role with the permission but no grants covers no rows
        return Restriction("(" + " OR ".join(g.sql() for g in grants) + ")" if grants else "FALSE",
                           tuple(g.selector() for g in grants))

    def selectors(self, permission: str) -> list[dict[str, Any]]:
        """The grants applied, as the audit trail records them."""
        return [{k: v for k, v in g.__dict__.items() if v not in ("", "*")} for g in self.grants.get(permission, ())]

    def require(self, permission: str) -> None:
        self.rows(permission)


def access_of(cfg: ServeConfig, identity: Identity) -> Access:
    principals = set(identity.principals)
    grants: dict[str, list[GrantConfig]] = {}
    roles = []
    for role in cfg.roles:
        if principals.isdisjoint(role.members):
            continue
        roles.append(role.name)
        for permission in role.permissions:
            held = grants.setdefault(permission, [])
            held.extend(g for g in role.grants if g not in held)
    return Access(identity, tuple(roles), {p: tuple(g) for p, g in grants.items()})
