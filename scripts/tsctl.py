"""TorchServe control from the command line: argparse and one call of serving.tsctl per action."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import requests

from serving import paths, tsctl


def start_ports(ports: str | None, run_dir: Path) -> dict[str, str] | None:
    """The listener overrides for ``--ports`` (None: the config's own ports), refused with the
    taken ports named when another process holds one and no TorchServe runs from ``run_dir``."""
    if ports is None:
        overrides = None
    elif ports == "free":
        overrides = tsctl.port_overrides()
    elif ports.isdigit():
        overrides = tsctl.port_block(int(ports))
    else:
        raise tsctl.TsError(f"--ports {ports!r}: give the first port (e.g. 8180) or 'free'")
    taken = tsctl.ports_in_use(overrides) if not tsctl.pid_of(run_dir.resolve()) else []
    if taken:
        raise tsctl.TsError(
            f"port(s) in use: {', '.join(taken)}; another TorchServe? Give this one other ports: "
            "--run-dir DIR --ports FIRST (or free)"
        )
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=tsctl.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--run-dir", type=Path, default=paths.RUN_DIR, help="TorchServe's working directory (default: var/)"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser(
        "start", help="start TorchServe, wait for /ping, register again what was registered before it stopped"
    )
    p.add_argument("--model-store", type=Path, default=paths.MODEL_STORE)
    p.add_argument(
        "--no-restore", action="store_true", help=f"do not re-register what the run dir's {tsctl.STATE_FILE} lists"
    )
    p.add_argument(
        "--register", metavar="MAR", action="append", default=[], help="also register this archive (repeatable)"
    )
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument(
        "--ports",
        metavar="FIRST|free",
        help="listen on five loopback ports from FIRST (inference, management, metrics, gRPC x2), or on "
        "free ones: for a second TorchServe beside a first, with its own --run-dir (default: the "
        "ports of config/config.properties, 8080-8082 and 7070-7071)",
    )
    sub.add_parser("stop", help="stop TorchServe")
    p = sub.add_parser(
        "register", help="register an archive from the model store (a new version goes beside the default one)"
    )
    p.add_argument("mar", help="file name in the model store, e.g. kor_ner.mar")
    p.add_argument("--workers", type=int, help="scale to this many workers (default: the archive's minWorkers)")
    for name, text in (
        ("describe", "show a model's workers and settings"),
        ("unregister", "remove a model (or one version)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("model")
        p.add_argument("--version")
    p = sub.add_parser("scale", help="set a model's worker count and wait for it")
    p.add_argument("model")
    p.add_argument("workers", type=int)
    p.add_argument("--version")
    sub.add_parser("list", help="list registered models")
    p = sub.add_parser("versions", help="list a model's versions, which is the default, and their workers")
    p.add_argument("model")
    p = sub.add_parser("set-default", help="make a version the default one")
    p.add_argument("model")
    p.add_argument("version")
    p = sub.add_parser(
        "rotate-keys", help="regenerate the inference and management keys (old ones stop working at once)"
    )
    p.add_argument("--api", choices=tsctl.KEY_APIS, action="append", help="only this key (repeatable; default: both)")
    args = parser.parse_args(argv)

    try:
        if args.action == "start":
            started = time.monotonic()
            server = tsctl.start(
                args.run_dir,
                args.model_store,
                overrides=start_ports(args.ports, args.run_dir),
                timeout=args.timeout,
                reregister=not args.no_restore,
                register_also=args.register,
            )
            print(
                f"TorchServe up at {server.inference_url} (management {server.management_url}, "
                f"metrics {server.metrics_url})"
            )
            for model in tsctl.list_models(server):
                print(
                    f"registered {model['modelName']} ({model['modelUrl']}): ready "
                    f"{time.monotonic() - started:.1f} s after start"
                )
        elif args.action == "stop":
            print("stopped" if tsctl.stop(args.run_dir) else f"no TorchServe running from {args.run_dir}")
        else:
            server = tsctl.Server.load(args.run_dir)
            if args.action == "register":
                print(f"registered {tsctl.register(server, args.mar, args.workers)}")
            elif args.action == "describe":
                print(json.dumps(tsctl.describe(server, args.model, args.version), indent=2, ensure_ascii=False))
            elif args.action == "unregister":
                tsctl.unregister(server, args.model, args.version)
                print(f"unregistered {args.model} {args.version or '(default version)'}")
            elif args.action == "scale":
                tsctl.scale(server, args.model, args.workers, version=args.version)
                print(f"{args.model}: {args.workers} READY workers")
            elif args.action == "list":
                print(json.dumps(tsctl.list_models(server), indent=2))
            elif args.action == "versions":
                for row in tsctl.versions(server, args.model):
                    print(
                        f"{args.model} {row['version']:<10} {'default' if row['default'] else '':<8}"
                        f"{row['ready_workers']}/{row['workers']} workers READY"
                    )
            elif args.action == "set-default":
                tsctl.set_default(server, args.model, args.version)
                print(f"{args.model}: default version is now {args.version}")
            elif args.action == "rotate-keys":
                tsctl.rotate_keys(server, tuple(args.api or tsctl.KEY_APIS))
                print(f"new {' and '.join(args.api or tsctl.KEY_APIS)} key(s) in {args.run_dir / 'key_file.json'}")
    except (tsctl.TsError, requests.RequestException, FileNotFoundError) as err:
        print(f"tsctl: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
