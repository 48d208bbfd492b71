"""Issue 10, finding 3's acceptance load, on simulated time: bogus POSTs against one installed portal while
its real SMS statuses are pushed. Shared by `tests/placements/test_bogus_load.py` and
`python -m benchmarks bogus_load`.

Time is the fake cloud's clock, frozen and moved by the load itself (1/rate s before each bogus POST), and
our limiter runs on the same clock (`ClockLimiter` replaces the Redis GCRA, same algorithm: `_gcra_python`);
a sleep our code would take for a permit advances that clock instead of the wall clock. So the figures do
not depend on how fast the machine is: "20 POSTs/s for 30 s" is 600 POSTs and 30 simulated seconds.

The bogus traffic cycles through made-up tokens and forged bodies to /b24/install/, /b24/events/ and the
frame pages, and valid tokens of a NON-admin user (fresh ones each time), which pass the OAuth server's
app.info and so reach the portal through the proof budget. Each second the status push task runs once for
the statuses that became due that second. Requests at the portal are attributed exactly: everything runs in
this thread, so what the portal received during a bogus POST was caused by it.
"""

from __future__ import annotations

import secrets
import types
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from tests.fakes.bitrix24 import FakePortal
from tests.fakes.clock import Clock

APP_URL = "/b24/app/"
LIST_MENU_URL = "/b24/placements/crm-list-menu/"
CONSENT_URL = "/b24/placements/userfield/consent/"
INSTALL_URL = "/b24/install/"
EVENTS_URL = "/b24/events/"
MEMBER_USER_ID = 5


class ClockLimiter:
    """oauth.ratelimit's backend interface on a test clock: the GCRA of the Redis script, in memory."""

    name = "clock"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tat: dict[str, float] = {}

    def run(self, key: str, bucket: Any, max_wait: float, penalty: float) -> float:
        from oauth.ratelimit import _gcra_python

        new_tat, wait = _gcra_python(self.tat.get(key, 0.0), self.clock.now(), bucket.interval, bucket.burst,
                                     max_wait, penalty)
        if new_tat is not None:
            self.tat[key] = new_tat
        return wait

    def reset(self, key: str) -> None:
        self.tat.pop(key, None)


@contextmanager
def simulated_time(clock: Clock) -> Iterator[Clock]:
    """Freeze `clock`, run our limiter on it and let its waits for a permit (`ratelimit.sleep`, which
    oauth.client and oauth.proofs use) advance it."""
    from oauth import ratelimit

    saved = ratelimit._backend
    was_frozen = clock.frozen
    clock.freeze()
    ratelimit._backend = ClockLimiter(clock)  # type: ignore[assignment]
    previous = ratelimit.use_time_source(types.SimpleNamespace(now=clock.now, sleep=clock.advance))
    try:
        yield clock
    finally:
        ratelimit._backend = saved
        ratelimit.use_time_source(previous)
        if not was_frozen:
            clock.unfreeze()


@dataclass
class LoadResult:
    posts: int = 0
    seconds: float = 0.0  # simulated
    answers: Counter[int] = field(default_factory=Counter)  # bogus POSTs by HTTP status
    portal_requests_by_bogus: int = 0
    push_runs: int = 0
    push_failures: int = 0  # runs that did not succeed, or left that second's statuses unpushed
    statuses: int = 0
    statuses_arrived: int = 0  # delivered statuses the portal received
    rejected_503: int = 0
    server_errors: int = 0  # bogus POSTs answered 5xx
    caused_by: Counter[str] = field(default_factory=Counter)  # portal requests by bogus kind and method

    @property
    def real_call_failures(self) -> int:
        return self.push_failures + (self.statuses - self.statuses_arrived)


def _made_up() -> str:
    return secrets.token_hex(16)


def bogus_requests(fake: FakePortal) -> list[Callable[[], tuple[str, dict[str, str], dict[str, str]]]]:
    """Makers of one bogus POST each: (path, query, form)."""

    def install_made_up() -> tuple[str, dict[str, str], dict[str, str]]:
        query, form = fake.install_frame()
        form.update(AUTH_ID=_made_up(), REFRESH_ID=_made_up(), APPLICATION_TOKEN=_made_up())
        return INSTALL_URL, query, form

    def install_member() -> tuple[str, dict[str, str], dict[str, str]]:
        query, form = fake.install_frame(user_id=MEMBER_USER_ID, is_admin=False)
        form["APPLICATION_TOKEN"] = _made_up()  # the takeover attempt of finding 1
        return INSTALL_URL, query, form

    def install_forged() -> tuple[str, dict[str, str], dict[str, str]]:
        return INSTALL_URL, {"DOMAIN": fake.domain, "PROTOCOL": "1"}, {"member_id": fake.member_id, "AUTH_ID": "x"}

    def uninstall_forged() -> tuple[str, dict[str, str], dict[str, str]]:
        return EVENTS_URL, {}, fake.onappuninstall(clean=True, application_token=_made_up(), apply=False)

    def update_made_up() -> tuple[str, dict[str, str], dict[str, str]]:
        payload = fake.onappupdate(apply=False)
        payload.update({"auth[access_token]": _made_up(), "auth[refresh_token]": _made_up()})
        return EVENTS_URL, {}, payload

    def update_member() -> tuple[str, dict[str, str], dict[str, str]]:
        return EVENTS_URL, {}, fake.onappupdate(apply=False, user_id=MEMBER_USER_ID, is_admin=False)

    def event_garbage() -> tuple[str, dict[str, str], dict[str, str]]:
        return EVENTS_URL, {}, {"event": "ONCRMDEALADD", "data[FIELDS][ID]": "1", "auth[domain]": fake.domain,
                                "auth[member_id]": fake.member_id, "auth[application_token]": _made_up()}

    def frame_made_up(url: str, placement: str, options: dict[str, Any]) -> Callable[[], Any]:
        def make() -> tuple[str, dict[str, str], dict[str, str]]:
            query, form = fake.placement_frame(placement, options)
            form.update(AUTH_ID=_made_up(), REFRESH_ID=_made_up())
            return url, query, form
        return make

    def app_page_member() -> tuple[str, dict[str, str], dict[str, str]]:
        query, form = fake.install_frame(user_id=MEMBER_USER_ID, is_admin=False)
        return APP_URL, query, form

    return [
        install_made_up, install_member, install_forged, uninstall_forged, update_made_up, update_member,
        event_garbage, frame_made_up(APP_URL, "DEFAULT", {}), app_page_member,
        frame_made_up(LIST_MENU_URL, "CRM_CONTACT_LIST_MENU", {"ID": "1"}),
        frame_made_up(CONSENT_URL, "USERFIELD_TYPE", {"MODE": "edit", "ENTITY_ID": "CRM_CONTACT",
                                                     "ENTITY_VALUE_ID": "1"}),
    ]


def seed_messages(fake: FakePortal, portal: Any, account: Any, count: int) -> list[Any]:
    """`count` messages Bitrix24 handed us (registered in the fake), sent, status not yet changed."""
    from django.utils import timezone

    from messageservice.models import Message
    from tests.fakes.b24_messageservice import send_from_bitrix24

    now = timezone.now() - timedelta(minutes=5)
    rows = [Message(portal=portal, account=account, carrier=account.carrier,
                    message_id=send_from_bitrix24(fake, account.code, "+79991234567", f"real {i}",
                                                  check_registered=False)["message_id"],
                    origin=Message.Origin.CRM, recipient_raw="+79991234567", recipient="+79991234567", body="real",
                    state=Message.State.HANDED_TO_CARRIER, status="queued", pushed_status="queued",
                    status_changed_at=now, push_due=False) for i in range(count)]
    return Message.objects.bulk_create(rows)


def run_load(client: Any, fake: FakePortal, portal: Any, account: Any, clock: Clock, *, rate: int = 20,
             seconds: int = 30, statuses_per_second: int = 5) -> LoadResult:
    """`rate` bogus POSTs per simulated second for `seconds`, one status push run per second. Call inside
    `simulated_time(clock)` with the per-address throttle set high."""
    from django.utils import timezone

    from messageservice import delivery
    from messageservice.models import Message
    from tests.fakes.b24_messageservice import status_updates

    if MEMBER_USER_ID not in fake.users:
        fake.add_user(MEMBER_USER_ID, is_admin=False)
    messages = seed_messages(fake, portal, account, seconds * statuses_per_second)
    makers = bogus_requests(fake)
    result = LoadResult(statuses=len(messages))
    started = clock.now()
    for second in range(seconds):
        for i in range(rate):
            clock.advance(1.0 / rate)
            path, query, form = makers[(second * rate + i) % len(makers)]()
            before = len(fake.requests)
            response = client.post(f"{path}?{urlencode(query)}" if query else path, data=form)
            caused = [r for r in fake.requests[before:] if not r.in_batch]  # HTTP requests, not batch commands
            result.portal_requests_by_bogus += len(caused)
            for record in caused:
                result.caused_by[f"{path} {makers[(second * rate + i) % len(makers)].__name__}: {record.method} "
                                 f"{record.http_status}"] += 1
            result.answers[response.status_code] += 1
            result.server_errors += response.status_code >= 500
            result.posts += 1
        # this second's real work: statuses that changed are pushed
        due = [m.pk for m in messages[second * statuses_per_second:(second + 1) * statuses_per_second]]
        Message.objects.filter(pk__in=due).update(status="delivered", push_due=True, status_changed_at=timezone.now())
        run = delivery.push_portal_statuses.apply(args=[portal.pk])
        result.push_runs += 1
        if not (run.successful() and str(run.result).startswith("pushed")) or Message.objects.filter(
                pk__in=due, push_due=True).exists():
            result.push_failures += 1
    result.seconds = clock.now() - started
    delivered = {u["MESSAGE_ID"] for u in status_updates(fake) if u["STATUS"] == "delivered"}
    result.statuses_arrived = sum(1 for m in messages if m.message_id in delivered)
    result.rejected_503 = fake.rejected_503
    return result


def proof_budget(seconds: float) -> float:
    """The most proofs unauthenticated traffic may make a portal answer in `seconds`."""
    from django.conf import settings

    return settings.B24_PROOF_BURST + settings.B24_PROOF_RATE_PER_MINUTE / 60.0 * seconds
