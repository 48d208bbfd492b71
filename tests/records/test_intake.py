"""do_accept_job: the intake every source (HTTP API, AMQP) stores jobs through."""

from __future__ import annotations

from typing import Any

import pytest

from b24portal.intake import Rejected
from records.intake import InvalidRecord, do_accept_job
from records.keys import do_create_api_key
from records.models import ApiKey, Record, StageMapping, SyncJob
from tenants.signals import portal_purged
from tests.factories import PortalFactory

pytestmark = pytest.mark.django_db

IVAN = {"full_name": "Иван Иванов", "phone": "+7 700 111-22-33", "stage": "NEW"}


def accept(portal: Any, **kwargs: Any) -> tuple[SyncJob, bool]:
    kwargs.setdefault("action", "create")
    kwargs.setdefault("external_id", "123")
    kwargs.setdefault("fields", IVAN)
    return do_accept_job(portal, **kwargs)


def test_a_create_stores_the_record_and_a_pending_job_with_the_phone_in_e164():
    portal = PortalFactory()
    job, created = accept(portal)
    assert created
    assert job.state == SyncJob.State.PENDING and job.action == "create"
    assert job.payload == {"full_name": "Иван Иванов", "phone": "+77001112233", "stage": "NEW"}
    assert job.record.external_id == "123" and job.record.lead_id is None
    assert job.reply_user == {"external_id": "123", **IVAN}


@pytest.mark.parametrize(("fields", "field"), [
    ({"full_name": "Иван"}, "phone"),
    ({"full_name": "Иван", "phone": "not a phone"}, "phone"),
    ({"phone": "+77001112233"}, "full_name"),
    ({**IVAN, "email": "nope"}, "email"),
    ({**IVAN, "colour": "red"}, "colour"),
    ({**IVAN, "extra": {"ASSIGNED_BY_ID": 1}}, "extra"),
    ({**IVAN, "full_name": ["a"]}, "full_name"),
])
def test_invalid_fields_are_refused_with_field_errors_and_nothing_is_stored(fields: dict, field: str):
    portal = PortalFactory()
    with pytest.raises(InvalidRecord) as caught:
        accept(portal, fields=fields)
    assert field in caught.value.field_errors
    assert caught.value.status == 400 and isinstance(caught.value, Rejected)
    assert not Record.objects.exists() and not SyncJob.objects.exists()


def test_a_missing_phone_says_so_in_the_words_of_the_reply_format():
    with pytest.raises(InvalidRecord) as caught:
        accept(PortalFactory(), fields={"full_name": "Иван"})
    assert caught.value.field_errors["phone"] == ["Missing phone number"]


def test_an_unknown_stage_is_refused_once_the_mapping_is_loaded():
    portal = PortalFactory()
    accept(portal, external_id="1", fields={**IVAN, "stage": "WHATEVER"})  # no mapping: taken as given
    StageMapping.objects.create(portal=portal, external_stage="NEW", status_id="NEW")
    with pytest.raises(InvalidRecord) as caught:
        accept(portal, external_id="2", fields={**IVAN, "stage": "WHATEVER"})
    assert "stage" in caught.value.field_errors


def test_an_update_or_move_of_an_unknown_record_is_a_404():
    portal = PortalFactory()
    for action, fields in (("update", {"full_name": "X"}), ("move", {"stage": "NEW"})):
        with pytest.raises(Rejected) as caught:
            accept(portal, action=action, external_id="nobody", fields=fields)
        assert caught.value.status == 404
    assert not SyncJob.objects.exists()


def test_a_move_takes_only_a_stage():
    portal = PortalFactory()
    accept(portal)
    with pytest.raises(InvalidRecord) as caught:
        accept(portal, action="move", fields={"stage": "NEW", "full_name": "X"})
    assert "full_name" in caught.value.field_errors


def test_a_repeated_idempotency_key_returns_the_first_job():
    portal = PortalFactory()
    first, created = accept(portal, idempotency_key="k-1")
    again, created_again = accept(portal, idempotency_key="k-1", fields={**IVAN, "full_name": "Other"})
    assert created and not created_again
    assert again.pk == first.pk
    assert SyncJob.objects.count() == 1


def test_the_same_idempotency_key_from_another_source_or_portal_is_another_job():
    portal = PortalFactory()
    accept(portal, idempotency_key="k-1")
    _, created_amqp = accept(portal, idempotency_key="k-1", source="amqp")
    _, created_other = accept(PortalFactory(), idempotency_key="k-1")
    assert created_amqp and created_other


def test_the_apply_task_is_dispatched_only_after_commit(django_capture_on_commit_callbacks: Any):
    portal = PortalFactory()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        accept(portal)
    assert len(callbacks) == 1


def test_a_purge_forgets_the_records_and_revokes_the_keys(django_capture_on_commit_callbacks: Any):
    portal = PortalFactory()
    key, _ = do_create_api_key(portal, name="k")
    accept(portal)
    portal_purged.send(sender=None, portal=portal)
    assert not Record.objects.exists() and not SyncJob.objects.exists()
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
