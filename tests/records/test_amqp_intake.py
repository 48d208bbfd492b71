"""The AMQP intake end to end with the real RabbitMQ: message → job → lead in the fake CRM → reply on the
message's replyQueue; refused messages → the dead-letter queue with the reason; a consumer killed before
its ack → the message is delivered again and deduplicated.

The consumer commits (it is a long-running process that checks its database connection), so these tests
use a transactional database.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from kombu import Queue

from records.amqp import REASON_HEADER, IntakeConsumer, Malformed, deliver_reply, message_body, parse_message
from records.channels import AmqpBinding
from records.models import Record, Reply, SyncJob
from records.replies import DeliveryError
from tests.amqp_harness import AMQP_TEST_URL, Rabbit
from tests.fakes import b24_crm
from tests.fakes.bitrix24 import FakePortal

pytestmark = pytest.mark.django_db(transaction=True)

IVAN = {"id": 123, "full_name": "Иван Иванов", "phone": "+77001112233", "stage": "NEW"}


class Killed(BaseException):
    """Stands for the process dying: nothing below catches it, the connection goes away without an ack."""


@pytest.fixture
def amqp(settings: Any) -> Iterator[Rabbit]:
    """The real RabbitMQ; this test's dead-letter exchange and queue; everything deleted afterwards."""
    rabbit = Rabbit(AMQP_TEST_URL)
    settings.AMQP_URL = AMQP_TEST_URL
    settings.AMQP_DEAD_LETTER_QUEUE = rabbit.name("dead-letter")
    rabbit.exchanges.append(settings.AMQP_DEAD_LETTER_QUEUE)
    yield rabbit
    rabbit.close()


@pytest.fixture
def bound_queue(amqp: Rabbit, installed_portal: Any) -> str:
    queue = amqp.queue("intake")
    AmqpBinding.objects.create(portal=installed_portal, queue=queue)
    return queue


def message(pattern: str, action: str, user: dict[str, Any], reply_queue: str) -> dict[str, Any]:
    return {"pattern": pattern, "data": {"action": action, "user": user, "replyQueue": reply_queue}}


def consume(until: Callable[[IntakeConsumer], bool], *, timeout: float = 20.0, **kwargs: Any) -> IntakeConsumer:
    consumer = IntakeConsumer(AMQP_TEST_URL, poll_seconds=0.1, **kwargs)
    deadline = time.monotonic() + timeout
    consumer.run(lambda: until(consumer) or time.monotonic() > deadline)
    return consumer


def leads_of(fake: FakePortal, external_id: str) -> list[dict[str, Any]]:
    return [lead for lead in b24_crm.all_leads(fake) if lead.get("ORIGIN_ID") == external_id]


def test_a_queue_message_becomes_a_lead_and_the_reply_arrives_on_its_reply_queue(
        amqp: Rabbit, bound_queue: str, fake_portal: FakePortal) -> None:
    replies = amqp.name("bitrix.responses")
    amqp.publish(bound_queue, message("user_created", "create_card", IVAN, replies), message_id="msg-1")

    consumer = consume(lambda c: c.outcome.acked >= 1)

    assert consumer.outcome.accepted == 1
    job = SyncJob.objects.get()
    assert (job.source, job.idempotency_key, job.reply_queue) == ("amqp", "amqp:msg-1", replies)
    assert job.state == SyncJob.State.SUCCEEDED
    (lead,) = leads_of(fake_portal, "123")
    assert lead["TITLE"] == "Иван Иванов" and lead["STATUS_ID"] == "NEW"
    reply = amqp.get(replies)
    assert reply is not None
    body = json.loads(reply.body)
    assert body == {"status": "success", "action": "create_card", "user": IVAN, "bitrix_lead_id": int(lead["ID"]),
                    "job_id": job.pk, "delivery_id": body["delivery_id"]}
    assert reply.properties["message_id"] == body["delivery_id"]
    assert reply.properties["delivery_mode"] == 2
    assert Reply.objects.get().state == Reply.State.DELIVERED
    assert amqp.count(bound_queue) == 0
    assert AmqpBinding.objects.get().accepted_count == 1


def test_update_and_move_messages_change_the_same_lead(amqp: Rabbit, bound_queue: str,
                                                       fake_portal: FakePortal) -> None:
    replies = amqp.name("bitrix.responses")
    amqp.publish(bound_queue, message("user_created", "create_card", IVAN, replies))
    amqp.publish(bound_queue, message("user_updated", "update_card", {**IVAN, "full_name": "Иван Петров"}, replies))
    amqp.publish(bound_queue, message("user_moved", "move_card", {"id": 123, "stage": "CONVERTED"}, replies))

    consume(lambda c: c.outcome.acked >= 3)

    (lead,) = leads_of(fake_portal, "123")
    assert (lead["TITLE"], lead["STATUS_ID"]) == ("Иван Петров", "CONVERTED")
    actions = [json.loads(m.body)["action"] for m in [amqp.get(replies) for _ in range(3)] if m is not None]
    assert actions == ["create_card", "update_card", "move_card"]


def test_malformed_messages_go_to_the_dead_letter_queue_with_the_reason_and_nothing_is_stored(
        amqp: Rabbit, bound_queue: str, settings: Any) -> None:
    replies = amqp.name("bitrix.responses")
    amqp.publish(bound_queue, b"{not json", content_type="application/json")
    amqp.publish(bound_queue, {"pattern": "user_deleted", "data": {"user": IVAN, "replyQueue": replies}})
    amqp.publish(bound_queue, message("user_created", "create_card", {"id": 7, "full_name": "Без телефона"},
                                      replies), message_id="no-phone")

    consume(lambda c: c.outcome.acked >= 3)

    dead = amqp.drain(settings.AMQP_DEAD_LETTER_QUEUE)
    reasons = [m.headers[REASON_HEADER] for m in dead]
    assert reasons[0].startswith("invalid message")
    assert reasons[1].startswith("pattern must be one of user_created")
    assert reasons[2] == "Missing phone number"
    assert all(m.headers["x-b24portal-queue"] == bound_queue for m in dead)
    assert message_body(dead[0]) == b"{not json"  # the message as it came
    assert dead[2].properties["message_id"] == "no-phone"
    assert not SyncJob.objects.exists() and not Record.objects.exists()
    # The old service answered a refused record on its reply queue; so do we.
    errors = [json.loads(m.body) for m in amqp.drain(replies)]
    assert {"status": "error", "reason": "Missing phone number", "user": {"id": 7, "full_name": "Без телефона"}} \
        in errors
    assert amqp.count(bound_queue) == 0
    binding = AmqpBinding.objects.get()
    assert binding.rejected_count == 3 and binding.last_rejection == "Missing phone number"


def test_a_consumer_killed_before_the_ack_gets_the_message_again_and_it_is_one_job_and_one_lead(
        amqp: Rabbit, bound_queue: str, fake_portal: FakePortal) -> None:
    replies = amqp.name("bitrix.responses")
    amqp.publish(bound_queue, message("user_created", "create_card", IVAN, replies))  # no message_id: body hash

    def die(job: SyncJob) -> None:
        raise Killed

    with pytest.raises(Killed):
        consume(lambda c: False, after_store=die)
    assert SyncJob.objects.count() == 1  # stored (and applied) before the crash, never acked

    again = consume(lambda c: c.outcome.acked >= 1)

    assert (again.outcome.accepted, again.outcome.duplicates) == (0, 1)
    assert SyncJob.objects.count() == 1
    assert len(leads_of(fake_portal, "123")) == 1
    assert len(amqp.drain(replies)) == 1
    assert amqp.count(bound_queue) == 0


def test_a_queue_its_owner_declared_with_arguments_is_read_as_it_is(
        amqp: Rabbit, installed_portal: Any) -> None:
    queue = amqp.name("owned")
    Queue(queue, durable=True, queue_arguments={"x-message-ttl": 600_000}).bind(amqp.channel).declare()
    AmqpBinding.objects.create(portal=installed_portal, queue=queue)
    amqp.publish(queue, message("user_created", "create_card", IVAN, ""))
    consumer = consume(lambda c: c.outcome.acked >= 1)
    assert consumer.outcome.accepted == 1 and SyncJob.objects.count() == 1


def test_a_message_our_code_fails_on_is_parked_in_the_dead_letter_queue_and_the_queue_goes_on(
        amqp: Rabbit, bound_queue: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("records.amqp.do_accept_job", broken)
    amqp.publish(bound_queue, message("user_created", "create_card", IVAN, ""))
    amqp.publish(bound_queue, message("user_created", "create_card", {**IVAN, "id": 124}, ""))
    consumer = consume(lambda c: c.outcome.acked >= 2)
    assert consumer.outcome.dead_lettered == 2
    dead = amqp.drain(settings.AMQP_DEAD_LETTER_QUEUE)
    assert [m.headers[REASON_HEADER] for m in dead] == ["not processed: RuntimeError: a bug"] * 2


def test_a_message_published_twice_with_one_message_id_is_one_job(amqp: Rabbit, bound_queue: str,
                                                                    fake_portal: FakePortal) -> None:
    for full_name in ("Иван Иванов", "Иван Иванов (sent again)"):
        amqp.publish(bound_queue, message("user_created", "create_card", {**IVAN, "full_name": full_name}, ""),
                     message_id="signup-123")
    consumer = consume(lambda c: c.outcome.acked >= 2)
    assert (consumer.outcome.accepted, consumer.outcome.duplicates) == (1, 1)
    assert SyncJob.objects.count() == 1 and len(leads_of(fake_portal, "123")) == 1


def test_a_disabled_binding_is_not_read(amqp: Rabbit, bound_queue: str) -> None:
    AmqpBinding.objects.update(enabled=False)
    amqp.publish(bound_queue, message("user_created", "create_card", IVAN, ""))
    started = time.monotonic()
    consume(lambda c: time.monotonic() - started > 1.0)
    assert amqp.count(bound_queue) == 1 and not SyncJob.objects.exists()


def test_the_amqp_deliverer_says_retry_when_the_broker_is_unreachable(settings: Any) -> None:
    settings.AMQP_URL = "amqp://guest:guest@127.0.0.1:1//"
    reply = Reply(kind=Reply.Kind.AMQP, target="bitrix.responses", body={"status": "success"},
                  delivery_id=uuid.uuid4())
    with pytest.raises(DeliveryError) as caught:
        deliver_reply(reply)
    assert caught.value.retryable


def test_consume_records_says_when_amqp_is_not_configured(settings: Any) -> None:
    settings.AMQP_URL = ""
    with pytest.raises(CommandError, match="AMQP_URL is not set"):
        call_command("consume_records", "--check-configured")
    settings.AMQP_URL = AMQP_TEST_URL
    call_command("consume_records", "--check-configured")


@pytest.mark.parametrize(("body", "reason"), [
    (b"[]", "the message must be a JSON object"),
    (b'{"pattern": "user_created"}', "data must be an object"),
    (b'{"pattern": "user_created", "data": {"action": "move_card", "user": {"id": 1}}}', "does not go with"),
    (b'{"pattern": "user_created", "data": {"user": "x"}}', "data.user must be an object"),
    (b'{"pattern": "user_created", "data": {"user": {"full_name": "x"}}}', "data.user.id is required"),
    (b'{"pattern": "user_created", "data": {"user": {"id": 1}, "replyQueue": 5}}', "replyQueue must be"),
])
def test_parse_message_refuses_what_is_not_the_format(body: bytes, reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        parse_message(body)


def test_parse_message_keeps_the_user_as_sent_and_a_move_carries_only_the_stage() -> None:
    parsed = parse_message(json.dumps(message("user_moved", "move_card", {**IVAN, "note": "x"}, "q")).encode())
    assert (parsed.action, parsed.external_id, parsed.fields) == ("move", "123", {"stage": "NEW"})
    assert parsed.user == {**IVAN, "note": "x"} and parsed.reply_queue == "q"
