"""Remake the lock files (requirements*.txt, every package pinned and hashed) from the readable
requirements*.in: argparse and one call of serving.locks. --check writes nothing and fails when a
fresh resolution differs from the checked-in locks (asks the index); tests/unit/test_locks.py checks
offline that no lock is stale against its .in."""

from __future__ import annotations

import argparse
import sys

from serving import locks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--check", action="store_true", help="resolve again into a scratch folder and compare; write nothing"
    )
    args = parser.parse_args(argv)
    try:
        differ = locks.lock_all(check=args.check)
    except locks.LockError as why:
        print(f"lock: {why}", file=sys.stderr)
        return 1
    for output in differ:
        print(f"lock: {output} differs from a fresh resolution of its .in: run scripts/lock.py", file=sys.stderr)
    if not args.check:
        print("lock: wrote " + ", ".join(lock.output for lock in locks.LOCKS))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
