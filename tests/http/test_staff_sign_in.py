"""Staff accounts over HTTP: enrollment, sign-in with password and TOTP, lockout, session cookie and timeouts."""

from __future__ import annotations

import re
from typing import Any

from service.domain.staff import Role
from service.domain.staff_sessions import COOKIE_NAME
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, FakeClock, create_agency
from tests.support.staff_pages import (
    PASSWORD,
    StaffBrowser,
    add_staff,
    audit_records,
    code_at,
    enroll,
    sign_in,
    staff_member,
    totp_secret_of,
)

Client = Any


def name(agency: AgencyKeys, who: str) -> str:
    return f"{who}-{agency.id[-8:]}"


async def actions(client: Client, agency: AgencyKeys) -> list[tuple[str, str]]:
    return [(r.action, r.outcome) for r in await audit_records(client, agency.id)]


class TestEnrollment:
    async def test_enrollment_shows_qr_and_secret_and_rejects_weak_passwords(
        self, client: Client, clock: FakeClock
    ) -> None:
        """The enrollment page shows an inline SVG QR code and the key; short, digit-less and common passwords fail."""
        agency = await create_agency(client)
        token = await add_staff(client, agency.slug, name(agency, "enr"), Role.AGENT)
        browser = StaffBrowser(client)
        page = await browser.get(f"/staff/enroll?token={token}")
        assert page.status == 200
        assert "<svg" in page.text
        assert "TOTP QR code" in page.text
        secret = totp_secret_of(page)
        assert len(secret) == 32
        for weak, message in [
            ("short1", "at least 12"),
            ("onlylettersandmore", "letters and digits"),
            ("password12345", "too common"),
            ("Qwerty2024!!", "too common"),
        ]:
            refused = await browser.post(
                "/staff/enroll",
                {"csrf": page.csrf, "token": token, "password": weak, "confirm": weak, "code": code_at(secret, clock)},
            )
            assert refused.status == 422, weak
            assert message in refused.text, weak
            assert weak not in refused.text
            assert 'aria-invalid="true"' in refused.text

    async def test_link_works_once_and_reset_issues_a_new_one(self, client: Client, clock: FakeClock) -> None:
        """After enrollment the link is dead; staff reset kills the old link and the account's sessions."""
        agency = await create_agency(client)
        username = name(agency, "once")
        token = await add_staff(client, agency.slug, username, Role.AGENT)
        user = await enroll(client, clock, token, username)
        again = await StaffBrowser(client).get(f"/staff/enroll?token={token}")
        assert again.status == 404
        assert (await sign_in(user, clock)).status == 303
        staff = client.app[SERVICES].staff
        from service.audit import Actor

        _, new_token = await staff.accounts.reset(agency.slug, username, Actor.operator(""))
        ended = await user.browser.get("/staff/orders/new")
        assert ended.status == 401
        assert (await StaffBrowser(client).get(f"/staff/enroll?token={new_token}")).status == 200
        assert ("staff.reset", "success") in await actions(client, agency)


class TestSignIn:
    async def test_sign_in_regenerates_the_session_and_sets_a_host_cookie(
        self, client: Client, clock: FakeClock
    ) -> None:
        """The cookie is __Host-, Secure, HttpOnly, SameSite=Strict, Path=/; the sign-in id is replaced at sign-in."""
        agency = await create_agency(client)
        username = name(agency, "cookie")
        user = await enroll(client, clock, await add_staff(client, agency.slug, username, Role.AGENT), username)
        clock.advance(30)
        browser = user.browser
        form = await browser.get("/staff/login")
        before = browser.cookie
        assert before is not None
        assert before.startswith("p.")
        step = await browser.post("/staff/login", {"csrf": form.csrf, "username": username, "password": PASSWORD})
        done = await browser.post("/staff/login/totp", {"csrf": step.csrf, "code": code_at(user.secret, clock)})
        assert done.status == 303
        header = next(h for h in done.set_cookie if h.startswith(COOKIE_NAME))
        attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
        assert {"secure", "httponly", "path"} <= attributes
        assert "samesite=strict" in header.lower()
        assert "domain" not in attributes
        assert "max-age" not in attributes
        assert browser.cookie is not None
        assert browser.cookie.startswith("s.")
        assert browser.cookie != before
        old = StaffBrowser(client)
        old.cookie = before
        assert (await old.get("/staff/orders/new")).status == 401

    async def test_wrong_password_and_unknown_user_get_the_same_answer(self, client: Client, clock: FakeClock) -> None:
        """A wrong password and an unknown username both answer 401 with one message, and both are audited."""
        agency = await create_agency(client)
        username = name(agency, "wrong")
        await enroll(client, clock, await add_staff(client, agency.slug, username, Role.AGENT), username)
        answers = []
        for who, password in [(username, "Nope12345678"), ("nobody-at-all", "Nope12345678")]:
            browser = StaffBrowser(client)
            form = await browser.get("/staff/login")
            page = await browser.post("/staff/login", {"csrf": form.csrf, "username": who, "password": password})
            answers.append((page.status, "The username or password is wrong." in page.text))
        assert answers == [(401, True), (401, True)]
        assert ("login.password", "failure") in await actions(client, agency)

    async def test_ten_failures_lock_the_account_for_thirty_minutes(self, client: Client, clock: FakeClock) -> None:
        """After 10 failed attempts even the right password is refused until 30 minutes have passed."""
        agency = await create_agency(client)
        username = name(agency, "lock")
        user = await enroll(client, clock, await add_staff(client, agency.slug, username, Role.AGENT), username)
        browser = StaffBrowser(client)
        for _ in range(10):
            form = await browser.get("/staff/login")
            await browser.post("/staff/login", {"csrf": form.csrf, "username": username, "password": "Wrong1234567"})
        locked = await sign_in_step(client, username, PASSWORD)
        assert locked.status == 403
        assert "locked" in locked.text
        assert ("login.lockout", "success") in await actions(client, agency)
        clock.advance(31 * 60)
        assert (await sign_in(user, clock)).status == 303

    async def test_a_totp_code_works_once(self, client: Client, clock: FakeClock) -> None:
        """Replaying the code that just signed in is refused (401) and recorded as a replay."""
        agency = await create_agency(client)
        username = name(agency, "replay")
        user = await enroll(client, clock, await add_staff(client, agency.slug, username, Role.AGENT), username)
        assert (await sign_in(user, clock)).status == 303
        used = code_at(user.secret, clock)
        browser = StaffBrowser(client)
        step = await sign_in_step(client, username, PASSWORD, browser)
        replayed = await browser.post("/staff/login/totp", {"csrf": step.csrf, "code": used})
        assert replayed.status == 401
        assert "already used" in replayed.text
        assert browser.cookie is not None
        assert browser.cookie.startswith("p.")
        records = await audit_records(client, agency.id)
        assert any(r.action == "login.totp" and "replay" in r.detail for r in records)

    async def test_totp_step_needs_the_password_step(self, client: Client) -> None:
        """Posting a code without a right password first goes back to the password form."""
        browser = StaffBrowser(client)
        form = await browser.get("/staff/login")
        page = await browser.post("/staff/login/totp", {"csrf": form.csrf, "code": "123456"})
        assert page.status == 401
        assert 'action="/staff/login"' in page.text


async def sign_in_step(client: Client, username: str, password: str, browser: StaffBrowser | None = None) -> Any:
    browser = browser or StaffBrowser(client)
    form = await browser.get("/staff/login")
    return await browser.post("/staff/login", {"csrf": form.csrf, "username": username, "password": password})


class TestSessions:
    async def test_idle_session_ends_after_fifteen_minutes(self, client: Client, clock: FakeClock) -> None:
        """A request 15 minutes and a second after the last one gets the sign-in page (401); the end is audited."""
        agency = await create_agency(client)
        user = await staff_member(client, clock, agency.slug, name(agency, "idle"), Role.AGENT)
        clock.advance(14 * 60)
        assert (await user.browser.get("/staff/orders/new")).status == 200
        clock.advance(15 * 60 + 1)
        ended = await user.browser.get("/staff/orders/new")
        assert ended.status == 401
        assert "without activity" in ended.text
        assert ("session.expired", "refused") in await actions(client, agency)

    async def test_absolute_limit_ends_an_active_session(self, client: Client, clock: FakeClock) -> None:
        """Even a session used every ten minutes ends 12 hours after sign-in."""
        agency = await create_agency(client)
        user = await staff_member(client, clock, agency.slug, name(agency, "abs"), Role.AGENT)
        for _ in range(12 * 6):
            clock.advance(600)
            page = await user.browser.get("/staff/orders/new")
            if page.status != 200:
                break
        assert page.status == 401
        assert "12-hour" in page.text

    async def test_sign_out_ends_the_session_on_the_server(self, client: Client, clock: FakeClock) -> None:
        """After sign-out the old cookie value, replayed, is refused."""
        agency = await create_agency(client)
        user = await staff_member(client, clock, agency.slug, name(agency, "out"), Role.AGENT)
        page = await user.browser.get("/staff/orders/new")
        cookie = user.browser.cookie
        out = await user.browser.post("/staff/logout", {"csrf": page.csrf})
        assert out.status == 303
        replay = StaffBrowser(client)
        replay.cookie = cookie
        assert (await replay.get("/staff/orders/new")).status == 401
        assert ("logout", "success") in await actions(client, agency)

    async def test_tampered_or_foreign_cookie_is_not_a_session(self, client: Client, clock: FakeClock) -> None:
        """A session cookie edited to name another agency, or malformed, is no session at all."""
        agency = await create_agency(client)
        other = await create_agency(client)
        user = await staff_member(client, clock, agency.slug, name(agency, "tamper"), Role.AGENT)
        assert user.browser.cookie is not None
        forged = StaffBrowser(client)
        forged.cookie = re.sub(r"agy_[0-9a-f]{16}", other.id, user.browser.cookie)
        assert (await forged.get("/staff/orders/new")).status == 401
        forged.cookie = "s.nonsense"
        assert (await forged.get("/staff/orders/new")).status == 401


class TestRefusals:
    async def test_sign_in_form_without_or_with_a_forged_csrf_token_is_refused(self, client: Client) -> None:
        """POST /staff/login with no sign-in session, or a wrong token, answers 403 and nothing else happens."""
        browser = StaffBrowser(client)
        page = await browser.post("/staff/login", {"username": "x", "password": "y"})
        assert page.status == 403
        form = await browser.get("/staff/login")
        forged = await browser.post("/staff/login", {"csrf": form.csrf[:-2] + "xx", "username": "x", "password": "y"})
        assert forged.status == 403
        assert "did not come from this site" in forged.text


class TestTeamPage:
    async def test_admin_adds_disables_and_cannot_reach_other_agencies(self, client: Client, clock: FakeClock) -> None:
        """An admin adds a member (one-time link shown), disables them (audited), and 404s on a foreign staff id."""
        agency = await create_agency(client)
        admin = await staff_member(client, clock, agency.slug, name(agency, "admin"), Role.ADMIN)
        page = await admin.browser.get("/staff/team")
        added = await admin.browser.post(
            "/staff/team", {"csrf": page.csrf, "username": name(agency, "new"), "role": "agent"}
        )
        assert added.status == 200
        link = re.search(r'id="enrollment-link">[^<]*/staff/enroll\?token=([A-Za-z0-9_-]+)<', added.text)
        assert link is not None
        newcomer = await enroll(client, clock, link.group(1), name(agency, "new"))
        assert (await sign_in(newcomer, clock)).status == 303
        member_id = re.search(r'action="/staff/team/(stf_[0-9a-f]{16})/disable"', added.text)
        assert member_id is not None
        disabled = await admin.browser.post(f"/staff/team/{member_id.group(1)}/disable", {"csrf": page.csrf})
        assert disabled.status == 200
        assert "disabled" in disabled.text
        assert (await newcomer.browser.get("/staff/orders/new")).status == 401
        assert ("staff.disable", "success") in await actions(client, agency)
        other = await create_agency(client)
        foreign = await staff_member(client, clock, other.slug, name(other, "agent"), Role.AGENT)
        del foreign
        other_members = await client.app[SERVICES].staff.accounts.list(other.slug)
        refused = await admin.browser.post(f"/staff/team/{other_members[0].id}/reset", {"csrf": page.csrf})
        assert refused.status == 404
