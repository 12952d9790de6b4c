"""``loglake-query --server https://… --token …``: the commands through ``loglake-query serve``.

Like logcli's ``LOKI_ADDR``, ``LOGLAKE_SERVER``, ``LOGLAKE_TOKEN`` and ``LOGLAKE_CACERT`` (the CA that
signed the service's certificate, if not a public one) stand in for the flags. The client holds no key
and no lake: it sends the command and its options (``POST /api/v1/run``), the service plans and runs it
over the caller's rows, and the client prints the table it answers (an Arrow IPC stream) exactly as the
local command would. ``tail -f`` asks again every ``--interval`` for lines since the newest it printed.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa

from query import config as query_config
from query import output
from runtime.errors import QueryError

_FILTERS = ("namespace", "pod", "container", "level", "since", "until", "grep", "regex")
# What the client sends of each command's options (the service takes these and no others).
OPTIONS: dict[str, tuple[str, ...]] = {
    "logs": (*_FILTERS, "limit", "reverse", "previous", "output_file"),
    "trace": ("trace_id", "output_file"),
    "stats": (*_FILTERS, "by"),
    "export": (*_FILTERS, "trace"),
    "sql": ("query",),
}
COMMANDS = (*OPTIONS, "tail")
FOLLOW = ("namespace", "pod", "container", "level", "grep", "regex")   # what tail -f filters new lines by


@dataclass(frozen=True)
class Client:
    server: str
    token: str | None
    cacert: str | None

    @classmethod
    def of(cls, args: argparse.Namespace) -> Client | None:
        server = getattr(args, "server", None) or os.environ.get("LOGLAKE_SERVER")
        if not server:
            return None
        if not server.startswith("https://"):
            raise QueryError(f"--server {server}: the service speaks HTTPS only; give https://HOST:PORT")
        return cls(server.rstrip("/"), getattr(args, "token", None) or os.environ.get("LOGLAKE_TOKEN"),
                   getattr(args, "cacert", None) or os.environ.get("LOGLAKE_CACERT"))

    def run(self, command: str, options: dict[str, object]) -> tuple[bytes, dict[str, str]]:
        req = urllib.request.Request(f"{self.server}/api/v1/run", method="POST",
                                     data=orjson.dumps({"command": command, "options": options}),
                                     headers={"Content-Type": "application/json"})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            ctx = ssl.create_default_context(cafile=self.cacert)
        except (OSError, ssl.SSLError) as e:
            raise QueryError(f"--cacert {self.cacert} cannot be used: {e}") from None
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=300) as r:
                return r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace").strip() or e.reason
            raise QueryError(f"{self.server} answered {e.code}: {text}") from None
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", e)
            raise QueryError(f"cannot reach {self.server} ({why}); check --server, --cacert and the network") from None

    def table(self, command: str, options: dict[str, object]) -> pa.Table:
        body, headers = self.run(command, options)
        if headers.get("X-Loglake-Truncated") == "true":
            print("loglake-query: the service cut the result at its row limit ([serve] sql_max_rows)",
                  file=sys.stderr)
        return pa.ipc.open_stream(body).read_all()


def _options(args: argparse.Namespace, command: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for dest in OPTIONS[command]:
        value = getattr(args, dest, None)
        if dest == "output_file":
            value = bool(value)
        if value not in (None, False):
            out[dest] = value
    return out


def run(client: Client, args: argparse.Namespace) -> int:
    tz = output.check_tz(args.tz or query_config.load(args.config).tz)
    command = args.command
    if command == "export":
        body, headers = client.run("export", _options(args, "export"))
        Path(args.out).write_bytes(body)
        doc = orjson.loads(headers.get("X-Loglake-Summary", "{}"))
        doc["archive"] = str(args.out)
        output.summary(args.format, [f"exported {doc.get('records', 0)} records to {args.out}, signed by "
                                     f"{doc.get('signer')} (check with verify-export --public-key)"], doc)
        return 0
    if command == "tail":
        return _tail(client, args, tz)
    output.emit(client.table(command, _options(args, command)), args.format, args.output_file, tz)
    return 0


def _tail(client: Client, args: argparse.Namespace, tz: str) -> int:
    """The last ``--lines`` lines; then, with ``-f``, new ones as they land (the service's ``/api/v1/tail``,
    which sends each new hot file's lines once, as the local ``tail -f`` prints them)."""
    options = {k: v for k, v in _options(args, "logs").items() if k not in ("limit", "output_file")}
    live = {k: ("true" if v is True else str(v)) for k, v in options.items() if k in FOLLOW}
    options.setdefault("since", "all")
    if not args.follow:
        output.write(client.table("logs", {**options, "limit": args.lines}), args.format, tz=tz,
                     header=args.format == "csv")
        return 0
    import asyncio
    try:
        asyncio.run(_follow(client, live, lambda: output.write(
            client.table("logs", {**options, "limit": args.lines}), args.format, tz=tz, header=args.format == "csv"),
            lambda rows: output.write(rows, args.format, tz=tz, header=False)))
    except KeyboardInterrupt:
        pass
    return 0


async def _follow(client: Client, options: dict[str, str], first: Callable[[], None],
                  show: Callable[[pa.Table], None]) -> None:
    import aiohttp   # only where a tail is followed: every other command starts without it
    url = client.server.replace("https://", "wss://", 1) + "/api/v1/tail?" + urllib.parse.urlencode(options)
    headers = {"Authorization": f"Bearer {client.token}"} if client.token else {}
    try:
        ctx = ssl.create_default_context(cafile=client.cacert)
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, ssl=ctx, headers=headers, heartbeat=30) as ws:
                first()   # once subscribed: what lands from here on comes as frames
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.BINARY:
                        break
                    show(pa.ipc.open_stream(msg.data).read_all())
    except aiohttp.WSServerHandshakeError as e:
        raise QueryError(f"{client.server} answered {e.status} to tail -f: {e.message}") from None
    except (aiohttp.ClientError, OSError, ssl.SSLError) as e:
        raise QueryError(f"cannot reach {client.server} ({e}); check --server, --cacert and the network") from None
