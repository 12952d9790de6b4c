"""The HTTPS service: aiohttp, TLS required, every request authenticated, authorised and audited.

aiohttp (not starlette + uvicorn) because a request's TLS client certificate is in reach
(``transport.get_extra_info("peercert")``; uvicorn's ASGI TLS extension is unreleased), WebSockets are
built in (Loki's ``/tail``), and request bodies are bounded by ``client_max_size``, all in one package.

Reading the lake blocks, so it runs in ``workers`` threads, each with a ``Lake`` of its own (catalog
connection, DuckDB database, keys): the event loop only parses, authenticates and answers. A query
running past ``query_timeout_s`` is interrupted and answered 503. Access entries are appended to the
audit trail by one more thread, so a request never waits for another's fsync on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from lake import config as lake_config
from lake.audit import AuditLog
from lake.catalog.base import open_catalog
from query.commands import LINE_COLUMNS
from query.connect import Lake, Restriction
from query.serve import commands, loki, sandbox, tail
from query.serve.access import access_of
from query.serve.config import ServeConfig
from query.serve.config import load as load_config
from query.serve.identity import Authenticator, Identity, TokenStore
from runtime import metrics
from runtime.errors import ConfigError, LoglakeError, QueryError, Unauthenticated

# What one request may run in a worker: (its thread's lake, audit context, grant, request arguments) -> answer.
Work = Callable[[Lake, dict[str, Any], Restriction, dict[str, Any]], loki.Answer]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What a guarded endpoint does once the caller is known: (request, identity, its rows, arguments, the audit
# entry to complete with rows and bytes) -> the response.
Guarded = Callable[[web.Request, Identity, Restriction, dict[str, Any], dict[str, Any]], Awaitable[web.StreamResponse]]
_QUERY_TEXT_MAX = 4096   # of a request's query, kept in its audit entry
log = logging.getLogger("loglake.serve")
T = TypeVar("T")


def tokens_path(config_path: str | None, env: dict[str, str] | None = None) -> TokenStore:
    cfg = load_config(config_path, env)
    return TokenStore(cfg.tokens_file or lake_config.load(config_path, env).aggregator.data_dir / "serve-tokens.json")


class Workers:
    """Threads that read the lake, one ``Lake`` each, made when the thread starts."""

    def __init__(self, config_path: str | None, env: dict[str, str] | None, count: int) -> None:
        self._local = threading.local()
        self._lakes: list[Lake] = []
        self._lock = threading.Lock()
        self._open = lambda: Lake(config_path, env)
        self.pool = ThreadPoolExecutor(count, thread_name_prefix="loglake-serve")
        self.busy = 0

    def _lake(self) -> Lake:
        lake = getattr(self._local, "lake", None)
        if lake is None:
            lake = self._local.lake = self._open()
            with self._lock:
                self._lakes.append(lake)
        return lake

    async def run(self, work: Callable[[Lake], T], timeout_s: float) -> T:
        """``work`` with a worker's lake; past ``timeout_s`` its query is interrupted (asyncio.TimeoutError)."""
        running: list[Lake] = []
        given_up = threading.Event()

        def call() -> T:
            if given_up.is_set():   # timed out while waiting for a worker: not run at all
                raise QueryError("the request timed out before a worker was free")
            lake = self._lake()
            running.append(lake)
            return work(lake)

        future = asyncio.get_running_loop().run_in_executor(self.pool, call)
        self.busy += 1
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except asyncio.TimeoutError:
            given_up.set()
            for lake in running:
                lake.interrupt()
            try:
                await future
            except LoglakeError:
                pass
            raise
        finally:
            self.busy -= 1

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for lake in self._lakes:
            lake.close()


class Auditor:
    """Access entries, appended by a thread of their own with its own catalog connection."""

    def __init__(self, config_path: str | None, env: dict[str, str] | None) -> None:
        settings = lake_config.load(config_path, env)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="loglake-serve-audit")
        self._catalog: Any = None
        self._log: AuditLog | None = None

        def open_log() -> None:
            self._catalog = open_catalog(settings.aggregator)
            self._log = AuditLog.of(settings.aggregator, self._catalog)
            self._log.ready()
        self.pool.submit(open_log).result()

    async def append(self, details: dict[str, Any]) -> None:
        assert self._log is not None
        await asyncio.get_running_loop().run_in_executor(self.pool, self._log.append, "access", details)

    def close(self) -> None:
        def shut() -> None:
            if self._catalog is not None:
                self._catalog.close()
        self.pool.submit(shut).result()
        self.pool.shutdown(wait=True)


def _peer_cert(request: web.Request) -> dict[str, Any] | None:
    transport = request.transport
    return transport.get_extra_info("peercert") if transport is not None else None


class Service:
    def __init__(self, config_path: str | None, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.cfg: ServeConfig = load_config(config_path, env)
        self.auth = Authenticator(self.cfg, tokens_path(config_path, env))
        self.auditor = Auditor(config_path, env)
        self.workers = Workers(config_path, env, self.cfg.workers)
        self.requests: Counter[str] = Counter()
        self.latency = metrics.Histogram([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30])
        self.registry = metrics.registry("serve", self._families)
        self.hub = tail.TailHub(lambda work: self.workers.run(work, self.cfg.query_timeout_s),
                                self.cfg.max_tail_connections)

    def _families(self, f: metrics.Families) -> None:
        f.counters("requests", "requests answered, by HTTP status", "code", {str(k): v for k, v in self.requests.items()},
                   known=("200", "400", "401", "403", "503"))
        f.histogram("request_duration_seconds", "time to answer an API request", self.latency)
        f.gauge("queries_running", "requests reading the lake now, or waiting for a worker", self.workers.busy)
        f.gauge("tails", "open /tail WebSockets", len(self.hub.tails))

    def close(self) -> None:
        self.hub.close()
        self.workers.close()
        self.auditor.close()

    async def _run(self, request: web.Request, identity: Identity, restrict: Restriction, args: dict[str, Any],
                   entry: dict[str, Any]) -> web.StreamResponse:
        """``POST /api/v1/run``: a CLI command for ``loglake-query --server``."""
        command, options = args["command"], args["options"]
        entry["command"] = {"command": command, "options": _capped(options)}
        what = {"command": f"serve run {command}", **identity.doc()}
        ran = await self.workers.run(lambda lake: commands.run(lake, what, restrict, self.cfg, self.config_path,
                                                               command, options), self.cfg.query_timeout_s)
        body = ran.body()
        entry.update({"rows": ran.table.num_rows if ran.table is not None else ran.summary.get("records", 0),
                      "bytes": len(body), "namespaces": ran.namespaces()})
        headers = {"X-Loglake-Summary": orjson.dumps(ran.summary).decode(),
                   "X-Loglake-Truncated": "true" if ran.truncated else "false"}
        kind = "application/zip" if ran.archive is not None else "application/vnd.apache.arrow.stream"
        return web.Response(body=body, content_type=kind, headers=headers)

    async def _tail(self, request: web.Request, identity: Identity, restrict: Restriction, args: dict[str, Any],
                    entry: dict[str, Any]) -> web.StreamResponse:
        _origin_refused(self.cfg, request)
        q = loki.selected(args)
        if q is None:
            raise QueryError("tail needs query, a stream selector such as {namespace=\"shop\"}")
        limit, start = loki.limit_of(self.cfg, args), tail.start_of(args, self.cfg.max_range_s)
        what = {"command": "serve tail", **identity.doc()}
        self.hub.reserve()   # 429 here, before the first lines are read, when the tails are many
        try:
            first = await self.workers.run(lambda lake: loki.log_lines(
                lake, what, restrict, q, start, time.time_ns(), limit, True), self.cfg.query_timeout_s)
            await self.auditor.append({**entry, "status": 101, "opened": True})   # the close writes its own
        except BaseException:
            self.hub.release()
            raise
        return await tail.serve_tail(request, self.hub, tail.Tail.of_logql(q, restrict), first, entry,
                                     self._still_allowed(request, "read", restrict), self.cfg.tail_recheck_s)

    async def _follow(self, request: web.Request, identity: Identity, restrict: Restriction, args: dict[str, Any],
                      entry: dict[str, Any]) -> web.StreamResponse:
        """``GET /api/v1/tail`` (WebSocket): ``loglake-query --server tail -f``, the CLI's columns of the new
        lines matching its filters (given by their option names), as Arrow IPC frames."""
        _origin_refused(self.cfg, request)
        options = {k: v for k, v in args.items() if k != "match[]"}
        entry["command"] = {"command": "tail -f", "options": _capped(options)}
        where, params = commands.follow_filter(options, self.config_path)
        self.hub.reserve()
        try:
            await self.auditor.append({**entry, "status": 101, "opened": True})
        except BaseException:
            self.hub.release()
            raise
        return await tail.serve_tail(request, self.hub, tail.Tail(LINE_COLUMNS, restrict.sql, where, params, loki=False),
                                     None, entry, self._still_allowed(request, "read", restrict),
                                     self.cfg.tail_recheck_s)

    def _still_allowed(self, request: web.Request, permission: str, rows: Restriction) -> Callable[[], bool]:
        """Whether the request's credential still proves an identity whose grant is still ``rows``."""
        header, cert = request.headers.get("Authorization"), _peer_cert(request)

        def check() -> bool:
            try:
                return access_of(self.cfg, self.auth.identify(header, cert)).rows(permission) == rows
            except LoglakeError:
                return False
        return check

    def endpoint(self, name: str, permission: str, work: Work,
                 args_of: Callable[[web.Request], Awaitable[dict[str, Any]]] | None = None) -> Handler:
        """An API endpoint: run ``work`` on the caller's rows in a worker, answer its JSON."""
        async def answer(request: web.Request, identity: Identity, restrict: Restriction, args: dict[str, Any],
                         entry: dict[str, Any]) -> web.StreamResponse:
            what = {"command": f"serve {name}", **identity.doc()}
            result = await self.workers.run(lambda lake: work(lake, what, restrict, args), self.cfg.query_timeout_s)
            body = orjson.dumps(result.doc)
            entry.update({"rows": result.rows, "bytes": len(body), "namespaces": result.namespaces})
            return web.Response(body=body, content_type="application/json")
        return self.guarded(name, permission, answer, args_of)

    def guarded(self, name: str, permission: str | Callable[[dict[str, Any]], str], run: Guarded,
                args_of: Callable[[web.Request], Awaitable[dict[str, Any]]] | None = None) -> Handler:
        """Authenticate, authorise ``permission``, ``run`` with the caller's rows, and audit the outcome
        whatever it is: every error is an HTTP status with one sentence."""
        async def handle(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            entry: dict[str, Any] = {"endpoint": name, "method": request.method, "remote": request.remote,
                                     "rows": 0, "bytes": 0}
            status = 200
            try:
                identity = self.auth.identify(request.headers.get("Authorization"), _peer_cert(request))
                entry.update(identity.doc())
                access = access_of(self.cfg, identity)
                args = await (args_of or _arguments)(request)
                if "query" in args:
                    entry["query"] = str(args["query"])[:_QUERY_TEXT_MAX]
                needed = permission if isinstance(permission, str) else permission(args)
                restrict = access.rows(needed)
                entry["selectors"] = access.selectors(needed)
                response = await run(request, identity, restrict, args, entry)
            except asyncio.TimeoutError:
                status, response = 503, _error(503, f"the query ran longer than {self.cfg.query_timeout_s:g} s and "
                                                    "was stopped; narrow the time range or the selector")
            except web.HTTPException as e:   # 413 for a body beyond max_body_bytes, 429: from aiohttp or here
                status, response = e.status, _error(e.status, e.text or e.reason)
            except LoglakeError as e:        # 400 for the caller's mistakes, 401, 403; 500 for the service's
                status = e.http_status
                if status >= 500:   # the service's trouble: its detail (paths, files) is for its log
                    log.error("request to %s failed: %s", name, e)
                    text = f"the service failed to answer ({type(e).__name__}); its log says why"
                else:
                    text = str(e)
                response = _error(status, text, {"WWW-Authenticate": 'Bearer realm="loglake"'}
                                  if isinstance(e, Unauthenticated) else None)
            except Exception:   # a defect: logged whole for the operator, one sentence for the caller
                log.exception("request to %s failed", name)
                status, response = 500, _error(500, "the service failed to answer this request; its log says why")
            entry.update({"status": status, "ms": round((time.perf_counter() - started) * 1000, 1)})
            if status != 200 and isinstance(response, web.Response):
                entry["error"] = (response.text or "").strip()
            self.requests[str(status)] += 1
            self.latency.observe(time.perf_counter() - started)
            await self.auditor.append(entry)
            return response
        return handle

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, ctype = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encoder(self.registry))
        response.headers["Content-Type"] = ctype
        return response

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes)
        cfg = self.cfg

        def api(work: Callable[..., loki.Answer]) -> Work:
            return lambda lake, what, restrict, args: work(lake, what, restrict, cfg, args)

        routes = {
            "query_range": api(loki.query_range),
            "query": api(lambda lake, what, restrict, cfg, args: loki.query_range(
                lake, what, restrict, cfg, args, instant=True)),
            "labels": api(loki.labels),
            "series": api(lambda lake, what, restrict, cfg, args: loki.series(
                lake, what, restrict, cfg, args.get("match[]", []), args)),
            "index/stats": api(loki.index_stats),
            "index/volume": api(loki.volume),
            "index/volume_range": api(lambda lake, what, restrict, cfg, args: loki.volume(
                lake, what, restrict, cfg, args, ranged=True)),
        }
        for name, work in routes.items():
            handler = self.endpoint(name, "read", work)
            app.router.add_route("GET", f"/loki/api/v1/{name}", handler)
            app.router.add_route("POST", f"/loki/api/v1/{name}", handler)
        values = self.endpoint("label_values", "read", lambda lake, what, restrict, args: loki.label_values(
            lake, what, restrict, cfg, args["name"], args), _values_arguments)
        app.router.add_route("GET", "/loki/api/v1/label/{name}/values", values)
        app.router.add_get("/loki/api/v1/tail", self.guarded("tail", "read", self._tail))
        app.router.add_get("/api/v1/tail", self.guarded("tail -f", "read", self._follow))
        app.router.add_post("/api/v1/run", self.guarded(
            "run", lambda args: commands.PERMISSION.get(args["command"], "admin"), self._run, _command_arguments))
        sql = self.endpoint("sql", "sql", api(sandbox.run))
        app.router.add_route("GET", "/api/v1/sql", sql)
        app.router.add_route("POST", "/api/v1/sql", sql)
        app.router.add_get("/loki/api/v1/status/buildinfo", self._buildinfo)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def _buildinfo(self, request: web.Request) -> web.Response:
        return web.json_response(loki.buildinfo())

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")


async def _arguments(request: web.Request) -> dict[str, Any]:
    """Query string and form body together, as Loki takes either; ``match[]`` keeps every value."""
    args: dict[str, Any] = {k: v for k, v in request.query.items() if k != "match[]"}
    matches = request.query.getall("match[]", [])
    if request.method == "POST":
        form = await request.post()
        args.update({k: str(v) for k, v in form.items() if k != "match[]"})
        matches = [*matches, *(str(v) for v in form.getall("match[]", []))]
    args["match[]"] = matches
    return args


async def _command_arguments(request: web.Request) -> dict[str, Any]:
    try:
        doc = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise QueryError('the body must be JSON: {"command": "logs", "options": {...}}') from None
    if not isinstance(doc, dict) or not isinstance(doc.get("command"), str) or not isinstance(
            doc.get("options", {}), dict):
        raise QueryError('the body must be {"command": NAME, "options": {OPTION: VALUE, ...}}')
    if doc["command"] not in commands.PERMISSION:
        raise QueryError(f"command {doc['command']!r} is not run by the service: choose from "
                              f"{', '.join(commands.PERMISSION)}")
    return {"command": doc["command"], "options": doc.get("options", {})}


async def _values_arguments(request: web.Request) -> dict[str, Any]:
    return {**await _arguments(request), "name": request.match_info["name"]}


def _capped(options: dict[str, Any]) -> dict[str, Any] | str:
    """A request's options as its audit entry keeps them: whole, or cut to _QUERY_TEXT_MAX as JSON text."""
    text = orjson.dumps(options, default=str).decode()
    return options if len(text) <= _QUERY_TEXT_MAX else text[:_QUERY_TEXT_MAX] + "…"


def _origin_refused(cfg: ServeConfig, request: web.Request) -> None:
    """A browser page elsewhere must not ride a user's client certificate into a WebSocket (which CORS does
    not cover): an upgrade carrying an Origin is refused unless [serve] allowed_origins names it."""
    origin = request.headers.get("Origin")
    if origin is not None and origin not in cfg.allowed_origins:
        raise web.HTTPForbidden(text=f"WebSocket from origin {origin[:100]!r} refused: add it to [serve] "
                                     "allowed_origins to let pages there tail")


def _error(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error as Loki answers it: the sentence as plain text, which Grafana shows as is."""
    return web.Response(status=status, text=text + "\n", headers=headers)


def ssl_context(cfg: ServeConfig) -> ssl.SSLContext:
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        raise ConfigError("[serve] needs tls_cert_file and tls_key_file: the service speaks HTTPS only "
                          "('loglake-aggregator certs --out DIR' makes a development PKI)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cfg.tls_cert_file), str(cfg.tls_key_file))
        if cfg.client_ca_file is not None:
            ctx.load_verify_locations(cafile=str(cfg.client_ca_file))
            ctx.verify_mode = ssl.CERT_OPTIONAL   # a token suffices; a certificate, if sent, must verify
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"[serve] TLS files cannot be used ({getattr(e, 'reason', None) or e}); check "
                          "tls_cert_file, tls_key_file and client_ca_file") from None
    return ctx


async def _serve(service: Service, ready: Callable[[str], None] | None) -> None:
    host, port = service.cfg.address
    runner = web.AppRunner(service.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context(service.cfg), shutdown_timeout=10)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = site._server    # the port bound, when the configuration asks for any (port 0)
    sockets = getattr(server, "sockets", None) or []
    where = f"https://{host}:{sockets[0].getsockname()[1] if sockets else port}"
    if ready is not None:
        ready(where)
    await stop.wait()
    await runner.cleanup()   # stops listening, lets requests in flight finish (up to shutdown_timeout)


def serve(config_path: str | None, ready: Callable[[str], None] | None = None) -> None:
    service = Service(config_path)
    ssl_context(service.cfg)   # refused before anything listens
    try:
        asyncio.run(_serve(service, ready))
    finally:
        service.close()
