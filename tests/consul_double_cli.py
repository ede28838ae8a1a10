"""
Run the Consul agent double (`consul_double.ConsulDouble`) as a standalone
development server: ``python scripts/consul-double [--port 8500]``.

It answers like a local Consul agent in dev mode, on ``127.0.0.1`` only,
prints its address and runs until interrupted (Ctrl-C or SIGTERM); what was
registered with it is lost when it stops.  It has no token (ACLs off) unless
``--acl-token`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from collections.abc import Sequence

from consul_double import ConsulDouble


__all__ = ["main", "parse_args", "serve"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """
    The command line's options.
    """
    parser = argparse.ArgumentParser(
        prog="consul-double",
        description=(
            "A Consul agent double (dev mode, ACLs off by default) on "
            "127.0.0.1, for development without a Consul installation."
        ),
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8500,
        help="the port to listen on (default: 8500, Consul's; 0 picks one)",
    )
    parser.add_argument(
        "--datacenter", default="dc1", help="the datacenter (default: dc1)"
    )
    parser.add_argument(
        "--node-name",
        default="consul-double",
        help="the node's name (default: consul-double)",
    )
    parser.add_argument(
        "--acl-token",
        default=None,
        help="turn ACLs on, with this as the only valid token",
    )
    return parser.parse_args(argv)


async def serve(options: argparse.Namespace) -> None:
    """
    Serve until SIGINT or SIGTERM, then stop the double.
    """
    double = ConsulDouble(
        port=options.port,
        acl_token=options.acl_token,
        datacenter=options.datacenter,
        node_name=options.node_name,
    )
    await double.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        _say(
            f"Consul agent double on http://{double.address} "
            f"(datacenter {double.datacenter}); Ctrl-C stops it"
        )
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await double.stop()
    _say("Consul agent double stopped")


def _say(line: str) -> None:
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the double; the exit status.
    """
    options = parse_args(argv)
    try:
        asyncio.run(serve(options))
    except OSError as error:
        sys.stderr.write(f"consul-double: {error}\n")
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers are set
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
