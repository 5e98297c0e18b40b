"""The demo page from the command line: argparse and one call of web.webapp.serve."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving import paths
from web import webapp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=webapp.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s); beyond this machine, use a reverse proxy",
    )
    parser.add_argument("--port", type=int, default=8090, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=paths.RUN_DIR,
        help="TorchServe's run dir, for its address and keys (default: var/)",
    )
    parser.add_argument("--model", default=paths.MODEL_NAME, help="model name in TorchServe (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        server = webapp.make_server(args.run_dir, args.model, args.host, args.port)
    except OSError as err:  # port taken, address not local
        print(f"webapp: error: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    webapp.serve(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
