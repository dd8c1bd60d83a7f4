"""Screenshots of every console page, for reviewers: ``make screenshots``.

Starts a throwaway server (SQLite in a temporary folder) with the console on a
free loopback port, fills it with a small fleet (tests/harness.py
``ConsoleFleet``), and photographs each page in Debian's chromium
(/usr/bin/chromium, driven by Playwright; nothing is downloaded). The PNGs go to
``--out`` (default ``.screenshots/``, kept out of git); docs/console.png is a copy
of one of them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import CHROMIUM, ConsoleFleet, ServerThread, chromium_problem  # noqa: E402

PAGES = [  # file name, hash route, what to wait for
    ("login", "", "#login"),
    ("agents", "#/agents", "#agents"),
    ("agent", "#/agents/planner", ".tree"),
    ("decisions", "#/decisions", "#live tr"),
    ("approvals", "#/approvals", "#approvals"),
]


def raise_demo_alert(server: ServerThread) -> None:
    """One governance alert, as the detector would raise it, for the pages to show."""
    from capgate_server.store import AlertRecord, AuditEvent

    now = server.app.replica.clock()
    server.app.replica.store.raise_alert(
        AlertRecord(
            "screenshot-planner-secrets",
            "planner",
            now,
            "new-resource",
            "planner read /secrets/** for the first time",
            containment="alert",
        ),
        AuditEvent(now, "capgate", "governance.alert", "planner"),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".screenshots")
    args = parser.parse_args()
    problem = chromium_problem()
    if problem is not None:
        print(f"cannot take screenshots: {problem}", file=sys.stderr)
        return 2
    from playwright.sync_api import expect, sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as data:
        server = ServerThread(Path(data), console_listen="127.0.0.1:0").start()
        fleet = ConsoleFleet(server)
        try:
            with server.client(fleet.service) as svc:  # a revoked hop, and its denies
                fleet.admin.revoke(fleet.below.delegation_id, "helper retired")
                svc.verify(fleet.below.token, "read", "/data/reports", presenter="helper")
            raise_demo_alert(server)
            url = f"http://127.0.0.1:{server.app.console_port}/"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                for name, route, ready in PAGES:
                    if name == "login":
                        page.goto(url)
                    else:
                        if not page.locator("#who").is_visible():
                            page.fill("#credential", server.admin_credential)
                            page.click("#login-form button[type=submit]")
                            expect(page.locator("#who")).to_be_visible()
                        page.goto(url + route)
                    expect(page.locator(ready).first).to_be_visible(timeout=15_000)
                    path = args.out / f"console-{name}.png"
                    page.screenshot(path=str(path), full_page=True)
                    print(path)
                browser.close()
        finally:
            fleet.close()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
