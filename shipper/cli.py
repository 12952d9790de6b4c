"""loglake-shipper: tail container logs and ship them."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from runtime import completion, logs
from runtime.config import version
from runtime.errors import ConfigError, LoglakeError, exit_with
from shipper import config
from shipper.agent import Agent
from shipper.metrics import serve
from shipper.transport import create

log = logging.getLogger("loglake.shipper")


async def _run(args: argparse.Namespace) -> None:
    settings = config.load(args.config)
    transport = create(settings.transport, settings.shipper)
    try:
        agent = Agent(settings, transport)
    except ValueError as e:  # a bad multiline or redaction rule
        raise ConfigError(f"[shipper] {e}") from None
    server = None
    if settings.shipper.metrics_address:
        server = await serve(agent, settings.shipper.metrics_address)
    await transport.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    log.info("shipper started", extra={"transport": transport.name, "node": settings.shipper.node_name,
                                       "include": [str(p) for p in settings.shipper.include]})
    try:
        await agent.run(once=args.once)
    finally:
        await transport.close()
        if server is not None:
            server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loglake-shipper", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    completion.files(parser.add_argument("--config", "-c", help="loglake TOML file (LOGLAKE_* variables override it)"))
    parser.add_argument("--print-completion", action=completion.PrintCompletion)
    parser.add_argument("--once", action="store_true",
                        help="ship everything present, wait for every acknowledgement, save the checkpoint, exit")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    try:
        asyncio.run(_run(args))
    except (LoglakeError, OSError) as e:
        if args.debug:
            raise
        return exit_with("loglake-shipper", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
