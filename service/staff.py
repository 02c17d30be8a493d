"""Staff account use cases: add, enroll, disable, reset, list, and signing in with a password and a TOTP code.

The CLI and the staff pages both come here.  Sign-in is two steps: the
password (argon2id, checked in an executor) and then a TOTP code, whose time
step is taken atomically so a code works once.  Ten failures of either step
lock the account for thirty minutes.  Every step, success or not, is written
to the agency's audit trail.  TOTP secrets are sealed under the agency's data
key like processor credentials; only the enrollment page ever shows one.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.adapters.password_hashing import hash_password, verify_password
from service.adapters.staff_sessions import StaffSessionStore
from service.adapters.staff_store import StaffStore, enrollment_hash
from service.adapters.store import AgencyRow
from service.agencies import AgencyService
from service.audit import Actor, Auditor
from service.clock import Clock
from service.domain.audit import Action, Outcome
from service.domain.staff import (
    ENROLLMENT_SECONDS,
    LOCKOUT_SECONDS,
    MAX_FAILED_ATTEMPTS,
    Role,
    StaffMember,
    StaffStatus,
    match_totp,
    new_enrollment_token,
    new_staff_id,
    new_totp_secret,
    password_problems,
    validate_username,
)
from service.domain.staff_sessions import StaffSession, new_csrf_token, new_secret, secret_hash, staff_cookie
from service.errors import OperatorError

TOTP_PURPOSE_PREFIX = "staff-totp"


@dataclass(frozen=True, repr=False)
class Enrollment:
    """An account being enrolled, with the TOTP secret its authenticator app needs (shown on that page only)."""

    member: StaffMember
    agency_slug: str
    totp_secret: str

    def __repr__(self) -> str:
        return f"Enrollment({self.member!r})"


@dataclass(frozen=True)
class SignInStep:
    """How a sign-in step ended: ``ok``, ``invalid``, ``locked``, ``replayed``; and for whom, when known."""

    status: str
    member: StaffMember | None = None


class StaffService:
    def __init__(
        self,
        store: StaffStore,
        sessions: StaffSessionStore,
        agencies: AgencyService,
        auditor: Auditor,
        clock: Clock,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.agencies = agencies
        self.auditor = auditor
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock())

    # -- operator and admin use cases ----------------------------------------------------
    async def _member(self, slug: str, username: str) -> tuple[AgencyRow, StaffMember]:
        row = await self.agencies.row(slug)
        member = await self.store.by_username(validate_username(username))
        if member is None or member.agency_id != row.agency.id:
            raise OperatorError(f"no staff member {username!r} in agency {slug!r}")
        return row, member

    async def _new_enrollment(self, member: StaffMember) -> tuple[StaffMember, str]:
        token = new_enrollment_token()
        member = member.with_changes(
            enrollment_hash=enrollment_hash(token), enrollment_expires=self._now() + ENROLLMENT_SECONDS
        )
        await self.store.set_enrollment(token, member, ENROLLMENT_SECONDS)
        return member, token

    async def add(self, slug: str, username: str, role: Role, actor: Actor) -> tuple[StaffMember, str]:
        """A new pending account and its one-time enrollment token (valid 24 hours)."""
        row = await self.agencies.row(slug)
        if not row.agency.active:
            raise OperatorError(f"agency {slug!r} is {row.agency.status}")
        name = validate_username(username)
        member = StaffMember(new_staff_id(), row.agency.id, name, role, StaffStatus.PENDING, self._now())
        member, token = await self._new_enrollment(member)
        if not await self.store.create(member):
            raise OperatorError(f"username {name!r} is taken")
        await self.auditor.record(
            actor, Action.STAFF_ADD, Outcome.SUCCESS, member.id, f"{name} as {role}", agency_id=member.agency_id
        )
        return member, token

    async def disable(self, slug: str, username: str, actor: Actor) -> StaffMember:
        _, member = await self._member(slug, username)
        member = member.with_changes(status=StaffStatus.DISABLED, enrollment_hash="", enrollment_expires=0)
        await self.store.update(member, "status", "enrollment_hash", "enrollment_expires")
        ended = await self.sessions.delete_all_of(member.agency_id, member.id)
        await self.auditor.record(
            actor,
            Action.STAFF_DISABLE,
            Outcome.SUCCESS,
            member.id,
            f"{member.username}; {ended} session(s) ended",
            agency_id=member.agency_id,
        )
        return member

    async def reset(self, slug: str, username: str, actor: Actor) -> tuple[StaffMember, str]:
        """Forget the password and the TOTP secret, end every session, issue a new enrollment link."""
        _, member = await self._member(slug, username)
        member = member.with_changes(
            status=StaffStatus.PENDING,
            password_hash=None,
            totp_sealed=None,
            pending_totp_sealed=None,
            last_totp_counter=-1,
            failed_attempts=0,
            locked_until=0,
        )
        member, token = await self._new_enrollment(member)
        await self.store.update(member)
        ended = await self.sessions.delete_all_of(member.agency_id, member.id)
        await self.auditor.record(
            actor,
            Action.STAFF_RESET,
            Outcome.SUCCESS,
            member.id,
            f"{member.username}; {ended} session(s) ended",
            agency_id=member.agency_id,
        )
        return member, token

    async def list(self, slug: str) -> list[StaffMember]:
        row = await self.agencies.row(slug)
        return sorted(await self.store.list(row.agency.id), key=lambda m: m.username)

    # -- enrollment ---------------------------------------------------------------------------
    async def _enrolling(self, token: str) -> tuple[AgencyRow, StaffMember] | None:
        located = await self.store.peek_enrollment(token)
        if located is None:
            return None
        member = await self.store.get(*located)
        row = await self.agencies.store.agency(located[0])
        if (
            member is None
            or row is None
            or not row.agency.active
            or member.status is not StaffStatus.PENDING
            or member.enrollment_hash != enrollment_hash(token)
            or member.enrollment_expires < self._now()
        ):
            return None
        return row, member

    def _seal(self, row: AgencyRow, member: StaffMember, secret: str) -> bytes:
        return self.agencies.keys_for(row).seal_secret(f"{TOTP_PURPOSE_PREFIX}:{member.id}", secret.encode())

    def _open(self, row: AgencyRow, member: StaffMember, sealed: bytes) -> str:
        return self.agencies.keys_for(row).open_secret(f"{TOTP_PURPOSE_PREFIX}:{member.id}", sealed).decode()

    async def begin_enrollment(self, token: str) -> Enrollment | None:
        """The account behind a live link with its (new or still pending) TOTP secret; None for a dead link."""
        found = await self._enrolling(token)
        if found is None:
            return None
        row, member = found
        if member.pending_totp_sealed:
            secret = self._open(row, member, member.pending_totp_sealed)
        else:
            secret = new_totp_secret()
            member = member.with_changes(pending_totp_sealed=self._seal(row, member, secret))
            await self.store.update(member, "pending_totp_sealed")
        return Enrollment(member, row.agency.slug, secret)

    async def complete_enrollment(
        self, token: str, password: str, confirm: str, code: str, source: str
    ) -> tuple[StaffMember | None, dict[str, str]]:
        """Set the password and the second factor; (member, {}) when done, (None, field errors) otherwise."""
        enrollment = await self.begin_enrollment(token)
        if enrollment is None:
            return None, {"form": "This enrollment link is no longer valid. Ask your administrator for a new one."}
        member = enrollment.member
        errors: dict[str, str] = {}
        problems = password_problems(password, member.username)
        if problems:
            errors["password"] = " ".join(problems)
        elif password != confirm:
            errors["confirm"] = "The two passwords differ."
        counter = match_totp(enrollment.totp_secret, code, self.clock())
        if counter is None:
            errors["code"] = "That code does not match. Enter the 6 digits your app shows now."
        actor = Actor(member.agency_id, member.id, member.username, str(member.role), source)
        if errors:
            await self.auditor.record(actor, Action.STAFF_ENROLL, Outcome.FAILURE, member.id, ", ".join(sorted(errors)))
            return None, errors
        if not await self.store.take_enrollment(token):
            return None, {"form": "This enrollment link has just been used."}
        assert counter is not None
        member = member.with_changes(
            status=StaffStatus.ACTIVE,
            password_hash=await hash_password(password),
            totp_sealed=member.pending_totp_sealed,
            pending_totp_sealed=None,
            last_totp_counter=counter,
            failed_attempts=0,
            locked_until=0,
            enrollment_hash="",
            enrollment_expires=0,
        )
        await self.store.update(member)
        await self.auditor.record(actor, Action.STAFF_ENROLL, Outcome.SUCCESS, member.id, member.username)
        return member, {}

    # -- sign-in --------------------------------------------------------------------------------
    async def _fail(self, member: StaffMember, actor: Actor, action: str, detail: str) -> SignInStep:
        _, locked = await self.store.record_failure(member, MAX_FAILED_ATTEMPTS, self._now() + LOCKOUT_SECONDS)
        await self.auditor.record(actor, action, Outcome.FAILURE, member.id, detail)
        if locked:
            await self.auditor.record(
                actor, Action.LOCKOUT, Outcome.SUCCESS, member.id, f"{MAX_FAILED_ATTEMPTS} failed attempts"
            )
            return SignInStep("locked", member)
        return SignInStep("invalid", member)

    async def check_password(self, username: str, password: str, source: str) -> SignInStep:
        try:
            name = validate_username(username)
        except ValueError:
            name = ""
        member = await self.store.by_username(name) if name else None
        matched = await verify_password(member.password_hash if member else None, password)
        if member is None:
            await self.auditor.record(
                Actor.anonymous(source), Action.LOGIN_PASSWORD, Outcome.FAILURE, "-", "unknown username"
            )
            return SignInStep("invalid")
        actor = Actor(member.agency_id, member.id, member.username, str(member.role), source)
        if member.locked(self.clock()):
            await self.auditor.record(actor, Action.LOGIN_PASSWORD, Outcome.REFUSED, member.id, "account locked")
            return SignInStep("locked", member)
        if member.status is not StaffStatus.ACTIVE or not await self._agency_active(member):
            await self.auditor.record(
                actor, Action.LOGIN_PASSWORD, Outcome.REFUSED, member.id, f"account {member.status}"
            )
            return SignInStep("invalid", member)
        if not matched:
            return await self._fail(member, actor, Action.LOGIN_PASSWORD, "wrong password")
        await self.auditor.record(actor, Action.LOGIN_PASSWORD, Outcome.SUCCESS, member.id)
        return SignInStep("ok", member)

    async def _agency_active(self, member: StaffMember) -> bool:
        row = await self.agencies.store.agency(member.agency_id)
        return row is not None and row.agency.active

    async def check_totp(self, agency_id: str, staff_id: str, code: str, source: str) -> SignInStep:
        member = await self.store.get(agency_id, staff_id)
        row = await self.agencies.store.agency(agency_id)
        if member is None or row is None or not member.totp_sealed:
            return SignInStep("invalid")
        actor = Actor(member.agency_id, member.id, member.username, str(member.role), source)
        if member.locked(self.clock()) or member.status is not StaffStatus.ACTIVE or not row.agency.active:
            await self.auditor.record(
                actor, Action.LOGIN_TOTP, Outcome.REFUSED, member.id, "account locked or disabled"
            )
            return SignInStep("locked", member)
        counter = match_totp(self._open(row, member, member.totp_sealed), code, self.clock())
        if counter is None:
            return await self._fail(member, actor, Action.LOGIN_TOTP, "wrong code")
        if not await self.store.take_totp_counter(member, counter):
            await self._fail(member, actor, Action.LOGIN_TOTP, "code already used (replay)")
            return SignInStep("replayed", member)
        await self.auditor.record(actor, Action.LOGIN, Outcome.SUCCESS, member.id)
        return SignInStep("ok", member)

    # -- sessions -------------------------------------------------------------------------------------
    async def start_session(self, member: StaffMember) -> tuple[str, StaffSession]:
        """A new session id for a member who just signed in: (cookie value, session)."""
        secret = new_secret()
        now = self.clock()
        session = StaffSession(
            agency_id=member.agency_id,
            staff_id=member.id,
            username=member.username,
            role=member.role,
            csrf=new_csrf_token(),
            created=now,
            last_seen=now,
            secret_hash=secret_hash(secret),
        )
        await self.sessions.put(session)
        return staff_cookie(member.agency_id, secret), session
