"""Drop the PostgreSQL schemas the README's fleet walkthrough made (``make clean``).

    python tools/drop_walkthrough_schemas.py [URL]     default: $CAPGATE_TEST_PG or
                                                       postgresql://postgres@127.0.0.1:5432/test

Only schemas named ``capgate_walkthrough_*`` are dropped. When PostgreSQL is not
reachable (or psycopg is not installed) there is nothing to clean: it says so and
exits 0.
"""

from __future__ import annotations

import os
import sys

PREFIX = "capgate_walkthrough_"


def drop(url: str) -> list[str]:
    """Drop every walkthrough schema at ``url``; returns their names."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                (PREFIX.replace("_", "\\_") + "%",),
            )
        ]
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
    return names


def main() -> int:
    url = (
        sys.argv[1:]
        or [os.environ.get("CAPGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")]
    )[0]
    try:
        names = drop(url)
    except Exception as e:  # no psycopg, no server: nothing of ours to clean up there
        print(f"walkthrough schemas: not cleaned ({type(e).__name__})")
        return 0
    print(f"walkthrough schemas: dropped {len(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
