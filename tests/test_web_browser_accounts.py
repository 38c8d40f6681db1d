"""Browser tests of the account pages (Playwright driving Debian's chromium): changing one's password,
a one-time reset link from an admin, two-factor sign-in, and the idle timeout.  On SQLite and on
PostgreSQL; the server's clock is a settable one, so the idle timeout is tested without waiting."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pyotp
import pytest

from test_web_browser import browser  # noqa: F401  (the module-scoped chromium fixture)
from web_helpers import CENTRE_A, PASSWORD, Clock, LiveServer, add_user, make_app, verify_chain

pytestmark = pytest.mark.browser
NEW_PASSWORD = "lantern otter marble quietly"


@pytest.fixture
def clock() -> Clock:
    return Clock(dt.datetime.now(dt.UTC).replace(tzinfo=None))


@pytest.fixture
def live(store_url: str, clock: Clock) -> Iterator[LiveServer]:
    app = make_app(store_url, now=clock)
    add_user(app, "root", "admin", all_centres=True)
    add_user(app, "dm", "data_manager", CENTRE_A)
    with LiveServer(app) as server:
        server.app = app  # type: ignore[attr-defined]
        yield server
    assert verify_chain(app).ok
    app.state.store.dispose()


def open_page(browser, live: LiveServer):  # type: ignore[no-untyped-def]  # noqa: F811
    return browser.new_context(base_url=live.url).new_page()


def sign_in(page, username: str, password: str = PASSWORD, *, expect: str = r".*/patients$",  # type: ignore[no-untyped-def]
            goto: bool = True):
    if goto:
        page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")
    if expect:
        page.wait_for_url(re.compile(expect))
    return page


def test_change_password(browser, live: LiveServer) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    other = sign_in(open_page(browser, live), "dm")  # another browser, signed in before
    page = sign_in(open_page(browser, live), "dm")
    page.click("header nav a[href='/account']")
    page.fill("#current_password", PASSWORD)
    page.fill("#new_password", "password1234")
    page.fill("#confirm_password", "password1234")
    with page.expect_navigation():
        page.click("#password-form button[type=submit]")
    assert "breached" in page.inner_text("main")  # refused, with the reason
    page.fill("#current_password", PASSWORD)
    page.fill("#new_password", NEW_PASSWORD)
    page.fill("#confirm_password", NEW_PASSWORD)
    with page.expect_navigation():
        page.click("#password-form button[type=submit]")
    assert page.url.endswith("/account?changed=password")
    assert page.locator("#sessions tbody tr").count() == 1  # only this session is left
    other.goto("/patients")
    assert "/login" in other.url  # the other browser was signed out
    page.click("form.logout button")
    page.wait_for_url(re.compile(r".*/login$"))
    sign_in(page, "dm", PASSWORD, expect="")
    assert "Wrong user name or password" in page.inner_text("main")
    sign_in(page, "dm", NEW_PASSWORD)
    page.context.close()
    other.context.close()


def test_reset_link(browser, live: LiveServer) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    admin = sign_in(open_page(browser, live), "root")
    admin.goto("/users")
    with admin.expect_navigation():
        admin.click("tr[data-user='dm'] form.reset button")
    link = admin.inner_text("#reset-url")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/reset/[A-Za-z0-9_-]{40,}", link)
    admin.context.close()

    user = open_page(browser, live)  # the user, who forgot the password, opens the link
    user.goto(link)
    assert user.inner_text("#reset-user") == "dm"
    user.fill("#new_password", "aaaaaaaaaaaa")
    user.fill("#confirm_password", "aaaaaaaaaaaa")
    with user.expect_navigation():
        user.click("#reset-form button[type=submit]")
    assert "breached" in user.inner_text("main")
    user.fill("#new_password", NEW_PASSWORD)
    user.fill("#confirm_password", NEW_PASSWORD)
    with user.expect_navigation():
        user.click("#reset-form button[type=submit]")
    assert "/login" in user.url and "Your password is set" in user.inner_text("#login-message")
    sign_in(user, "dm", NEW_PASSWORD)
    response = user.goto(link)  # used once
    assert response.status == 404 and "already used" in user.inner_text("main")
    user.context.close()


def test_idle_timeout(browser, live: LiveServer, clock: Clock) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    page = sign_in(open_page(browser, live), "dm")
    clock.advance(minutes=25)
    page.goto("/worklist")
    assert page.url.endswith("/worklist")  # active: the idle timeout moved on
    clock.advance(minutes=25)
    page.goto("/dashboard")
    assert page.url.endswith("/dashboard")
    clock.advance(minutes=31)  # idle longer than session_idle_minutes (30)
    page.goto("/patients/new")
    assert page.url.endswith("/login?next=/patients/new")
    sign_in(page, "dm", expect=r".*/patients/new$", goto=False)  # back where the user was going
    clock.advance(minutes=31)
    page.fill("#f-patient_id", "PB-9")
    with page.expect_navigation():
        page.click("#register button[type=submit]")  # a form sent after the timeout goes to sign-in
    assert "/login" in page.url
    page.context.close()


def test_two_factor_sign_in(browser, live: LiveServer, clock: Clock) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    page = sign_in(open_page(browser, live), "dm")
    page.goto("/account")
    page.click("#two-factor a[href='/account/totp']")
    assert page.locator("img.qr").count() == 1
    secret = page.inner_text("#totp-secret")
    totp = pyotp.TOTP(secret)
    page.fill("#code", totp.at(clock.now.replace(tzinfo=dt.UTC)))
    with page.expect_navigation():
        page.click("#totp-enrol button[type=submit]")
    assert "On:" in page.inner_text("#totp-state")
    page.click("form.logout button")
    page.wait_for_url(re.compile(r".*/login$"))
    clock.advance(seconds=60)
    sign_in(page, "dm", expect=r".*/login/totp.*")
    page.fill("#code", "000000")
    with page.expect_navigation():
        page.click("#totp-form button[type=submit]")
    assert "Wrong code" in page.inner_text("main")
    page.fill("#code", totp.at(clock.now.replace(tzinfo=dt.UTC)))
    with page.expect_navigation():
        page.click("#totp-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/patients$"))
    page.context.close()
