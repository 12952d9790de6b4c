"""``loglake-query serve``: the lake over HTTPS for a team, with Loki's HTTP API for Grafana.

Only this process holds the master key. Every request is authenticated (a bearer token, a client
certificate, or a JWT from the site's identity provider), authorised by roles that grant selectors and
permissions, deny by default, and audited with who asked. A grant restricts the rows of the ``logs``
relation itself (query.connect), so no endpoint can return a row outside it.

    config      [serve]: address, TLS, identities, roles, limits
    identity    who a request is: tokens (stored as hashes), certificate subjects, JWTs
    access      what an identity may do: roles, permissions, the rows its grants cover
    logql       the LogQL subset Grafana's Loki data source sends
    loki        Loki's HTTP API over the lake
    app         the aiohttp application: TLS, authentication, audit, limits, /healthz, /metrics
"""
