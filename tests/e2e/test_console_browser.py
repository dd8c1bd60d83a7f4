"""The operator console in a real headless browser (Debian's chromium, driven by Playwright):
log in, find an agent, open its delegation tree, revoke a hop and see it marked, watch a
denied decision appear live, suspend an agent and narrow its ceiling, decide an approval as
an approver and see a new request arrive, and see markup in an agent's fields stay text.

The browser is never downloaded: Playwright launches /usr/bin/chromium. Without it these
tests are skipped on a developer's machine and fail in CI (``CAPGATE_CI=1``).
"""

from __future__ import annotations

import pytest

from harness import CHROMIUM, ConsoleFleet, ServerThread

pytestmark = pytest.mark.chromium
WAIT = 15_000  # ms Playwright waits for a page to show something (a bound, not a measure)


@pytest.fixture
def fleet(tmp_path):
    server = ServerThread(tmp_path / "data", console_listen="127.0.0.1:0").start()
    f = ConsoleFleet(server)
    f.server = server
    f.url = f"http://127.0.0.1:{server.app.console_port}/"
    yield f
    f.close()
    server.stop()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def log_in(page, url: str, credential: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator("#login")).to_be_visible(timeout=WAIT)
    page.fill("#credential", credential)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#who")).to_be_visible(timeout=WAIT)


def test_log_in_find_an_agent_revoke_a_hop_and_watch_the_deny_arrive(fleet, page):
    from playwright.sync_api import expect

    page.goto(fleet.url)
    expect(page.locator("#login")).to_be_visible(timeout=WAIT)
    expect(page.locator("#view")).to_be_empty()  # nothing shown before logging in
    page.fill("#credential", "cg_not-a-credential")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("unknown", timeout=WAIT)

    log_in(page, fleet.url, fleet.server.admin_credential)
    expect(page.locator("#agents")).to_be_visible(timeout=WAIT)
    expect(page.locator("tr[data-agent=idle-bot] .badge.suspended")).to_be_visible()
    page.fill("#find-agent", "plan")
    expect(page.locator("tr[data-agent=worker]")).to_be_hidden()
    page.click("tr[data-agent=planner] a")

    worker_hop = page.locator(f".hop[data-id='{fleet.hop.delegation_id}']")
    helper_hop = page.locator(f".hop[data-id='{fleet.below.delegation_id}']")
    expect(worker_hop).to_be_visible(timeout=WAIT)
    expect(helper_hop).to_contain_text("helper")
    expect(worker_hop.locator(".badge.revoked")).to_have_count(0)
    worker_hop.locator("button.revoke").click()
    expect(page.locator("#confirm")).to_be_visible()
    page.fill("#confirm-reason", "worker compromised")
    page.click("#confirm-ok")
    expect(worker_hop.locator(".badge.revoked")).to_be_visible(timeout=WAIT)
    expect(helper_hop.locator(".badge.dead")).to_be_visible()
    expect(page.locator(f".hop[data-id='{fleet.root.token_id}'] .badge")).to_have_count(0)

    page.click("#nav a[href='#/decisions']")
    expect(page.locator("#live-status")).to_have_text("live", timeout=WAIT)
    expect(page.locator("#live tr.deny")).to_have_count(1)  # the planner's write, earlier
    with fleet.server.client(fleet.service) as svc:
        denied = svc.verify(fleet.hop.token, "read", "/data/c", presenter="worker")
    assert not denied.allowed and denied.code == "revoked"
    row = page.locator("#live tr.deny", has_text="revoked")
    expect(row).to_be_visible(timeout=WAIT)
    expect(row).to_contain_text("planner → worker")

    revokes = [e for e in fleet.admin.audit(kind="revoke") if e.subject == fleet.hop.delegation_id]
    assert [e.principal for e in revokes] == ["admin"]


def test_suspend_from_the_agent_page_and_filter_the_live_table(fleet, page):
    from playwright.sync_api import expect

    log_in(page, fleet.url + "#/agents/worker", fleet.server.admin_credential)
    expect(page.locator("#view h1")).to_contain_text("worker", timeout=WAIT)
    page.click("#suspend")
    page.click("#confirm-ok")
    expect(page.locator("#view h1 .badge.suspended")).to_be_visible(timeout=WAIT)
    assert fleet.admin.get_agent("worker").status == "suspended"
    expect(
        page.locator(f".hop[data-id='{fleet.hop.delegation_id}'] .badge.suspended")
    ).to_be_visible()
    page.click("#narrow")
    page.fill("#confirm-grants", "read:/data/reports/*")
    page.click("#confirm-ok")
    expect(page.locator("#ceiling")).to_have_text("read:/data/reports/*", timeout=WAIT)
    page.click("#narrow")
    page.fill("#confirm-grants", "read:/**")  # wider: refused, and said why
    page.click("#confirm-ok")
    expect(page.locator("#flash.error")).to_contain_text("only narrows", timeout=WAIT)
    assert list(fleet.admin.get_agent("worker").ceiling) == ["read:/data/reports/*"]

    page.goto(fleet.url + "#/decisions?decision=deny")
    page.reload()
    expect(page.locator("#live-status")).to_have_text("live", timeout=WAIT)
    expect(page.locator("#live tr.allow")).to_have_count(0)
    with fleet.server.client(fleet.service) as svc:
        svc.verify(fleet.root.token, "read", "/data/z", presenter="planner")  # an allow
        svc.verify(fleet.hop.token, "read", "/data/z", presenter="worker")  # suspended
    expect(page.locator("#live tr.deny", has_text="/data/z")).to_be_visible(timeout=WAIT)
    expect(page.locator("#live tr.allow")).to_have_count(0)


def test_an_approver_sees_only_approvals_and_decides_one(fleet, page):
    from playwright.sync_api import expect

    log_in(page, fleet.url, fleet.approver)
    expect(page.locator("#nav a")).to_have_count(1)
    row = page.locator(f"tr[data-approval='{fleet.approval.id}']")
    expect(row).to_contain_text("4200", timeout=WAIT)
    row.locator("button.approve").click()
    page.fill("#confirm-reason", "budgeted")
    page.click("#confirm-ok")
    expect(row).to_have_count(0, timeout=WAIT)
    assert fleet.admin.get_approval(fleet.approval.id).status == "approved"
    with fleet.server.client(fleet.payer) as payer:  # a new request shows up by itself
        second = payer.request_approval(
            fleet.invoice, "pay", "/invoices/inv-9", ctx={"amount": "9100"}
        )
    expect(page.locator(f"tr[data-approval='{second.id}']")).to_contain_text("9100", timeout=WAIT)
    fleet.admin.disable_principal("carol")  # the session ends with the credential
    expect(page.locator("#login-error")).to_contain_text("log in again", timeout=WAIT)
    expect(page.locator("#view")).to_be_empty()


def test_markup_in_an_agents_fields_is_shown_as_text_never_run(fleet, page):
    from playwright.sync_api import expect

    evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    fleet.admin.create_agent("mallory", ["read:/m/*"], owner=evil[:60], description=evil)
    log_in(page, fleet.url + "#/agents/mallory", fleet.server.admin_credential)
    expect(page.locator("dl.facts")).to_contain_text(evil, timeout=WAIT)
    page.goto(fleet.url + "#/agents")
    expect(page.locator("tr[data-agent=mallory]")).to_contain_text(evil[:60])
    assert page.locator("#view img, #view script").count() == 0
    assert page.evaluate("window.pwned") is None
