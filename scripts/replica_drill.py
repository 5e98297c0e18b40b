"""The replicas drill from the command line: argparse and one call of drills.replica_drill.drill."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import requests

from drills import replica_drill
from serving import paths, tsctl
from serving.package_model import PackagingError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=replica_drill.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=paths.DEMO_MODEL_DIR, help="checkpoint or save_pretrained directory (default: demo_model/)")
    parser.add_argument("--workdir", type=Path, default=paths.RUN_DIR / "replica-drill", help="archives, run dirs, HAProxy config (default: var/replica-drill/; emptied first)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients, half plain, half retrying (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="workers per replica (default: %(default)s)")
    parser.add_argument("--settle", type=float, default=5, help="seconds of load between steps (default: %(default)s)")
    parser.add_argument("--first-port", type=int, default=18300, help="replicas on the loopback ports FIRST.., FIRST+10.. (tsctl --ports), HAProxy on FIRST+20; 0: free ports (default: %(default)s)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop the clients after this many requests (default: %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=30, help="read timeout of each request in seconds (default: %(default)s)")
    parser.add_argument("--deadline", type=float, default=600, help="give up after this many seconds in all (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if args.clients < 2 or shutil.which("haproxy") is None:
        parser.error("needs --clients >= 2 and Debian's haproxy (apt-get install haproxy)")
    try:
        result = replica_drill.drill(args)
    except (RuntimeError, tsctl.TsError, PackagingError, requests.RequestException) as err:
        print(f"replica_drill: error: {err}", file=sys.stderr)
        return 1
    result["problems"] = replica_drill.verdict(result)
    text = json.dumps({k: v for k, v in result.items() if k != "haproxy_config"}, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for problem in result["problems"]:
        print(f"replica_drill: {problem}", file=sys.stderr)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
