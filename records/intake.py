"""Accepting a job from an intake (the HTTP API, the AMQP consumer): validate, store, dispatch on commit.

    job, created = do_accept_job(portal, action="create", external_id="123",
                                 fields={"full_name": "Иван Иванов", "phone": "+77001112233", "stage": "NEW"})

Invalid input raises `InvalidRecord` (a 400 `Rejected` carrying `field_errors`) and stores nothing; an
update or move of a record we do not know raises a 404 `Rejected`; a repeated idempotency key (per portal
and source) returns the job stored the first time with `created=False`. The job is stored in one
transaction with its record; the apply task is dispatched once that commits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from b24portal.intake import Rejected
from tenants.models import Portal

from .models import ApiKey, Record, StageMapping, SyncJob
from .tasks import request_apply_on_commit

ACTIONS = tuple(SyncJob.Action.values)
FIELDS = ("full_name", "phone", "stage", "email", "comment", "extra")
EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@~-]{0,99}$")
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no blanks
# Lead fields a caller may set besides ours (crm.lead.fields); user fields by pattern. Everything else
# (ORIGINATOR_ID, ASSIGNED_BY_ID, STATUS_ID, ...) is ours to set or nobody's.
EXTRA_LEAD_FIELDS = frozenset({
    "SOURCE_ID", "SOURCE_DESCRIPTION", "STATUS_DESCRIPTION", "POST", "ADDRESS", "ADDRESS_CITY",
    "ADDRESS_COUNTRY", "COMPANY_TITLE", "OPPORTUNITY", "CURRENCY_ID", "BIRTHDATE", "HONORIFIC",
    "UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM",
})
USER_FIELD_RE = re.compile(r"^UF_CRM_[A-Z0-9_]{1,50}$")
MAX_EXTRA_FIELDS = 50
MAX_TEXT = {"full_name": 255, "stage": 50, "email": 255, "comment": 5000}
MAX_EXTRA_VALUE = 1000
REQUIRED: dict[str, tuple[str, ...]] = {"create": ("full_name", "phone"), "move": ("stage",)}


class InvalidRecord(Rejected):
    """The record's fields are refused: `field_errors` maps each field to its problems."""

    def __init__(self, field_errors: dict[str, list[str]]) -> None:
        summary = "; ".join(f"{name}: {' '.join(problems)}" for name, problems in field_errors.items())
        super().__init__(f"invalid record: {summary}", 400)
        self.field_errors = field_errors


class UnknownRecord(Rejected):
    def __init__(self, external_id: str) -> None:
        super().__init__(f"no record with external_id {external_id!r}", 404)


def normalize_phone(raw: Any) -> str:
    """E.164 ("+77001112233"); ValueError with the reason otherwise. Numbers without a country code are read
    against RECORDS_PHONE_REGION when it is set."""
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise ValueError("must be a string")
    text = str(raw).strip()
    if not text:
        raise ValueError("Missing phone number")
    if len(text) > 40:
        raise ValueError("too long")
    region = settings.RECORDS_PHONE_REGION.upper() or None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number (write it with its country code, e.g. +77001112233)") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_TEXT[name]:
        raise ValueError(f"at most {MAX_TEXT[name]} characters")
    return value


def _extra(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("must be an object of lead fields")
    if len(value) > MAX_EXTRA_FIELDS:
        raise ValueError(f"at most {MAX_EXTRA_FIELDS} fields")
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = str(key).upper()
        if name not in EXTRA_LEAD_FIELDS and not USER_FIELD_RE.match(name):
            raise ValueError(f"{key!s:.60} is not a lead field this API sets")
        if item is not None and not isinstance(item, str | int | float | bool):
            raise ValueError(f"{name} must be a plain value")
        if isinstance(item, str) and len(item) > MAX_EXTRA_VALUE:
            raise ValueError(f"{name} is longer than {MAX_EXTRA_VALUE} characters")
        out[name] = item
    return out


def known_stages(portal: Portal) -> set[str]:
    return set(StageMapping.objects.filter(portal=portal).values_list("external_stage", flat=True))


def validate_fields(portal: Portal, action: str, fields: Any) -> dict[str, Any]:
    """The fields of one job, checked and normalized (our vocabulary); InvalidRecord lists every problem."""
    if not isinstance(fields, Mapping):
        raise InvalidRecord({"non_field_errors": ["the record must be a JSON object"]})
    errors: dict[str, list[str]] = {}
    given = {str(k): v for k, v in fields.items() if v is not None}
    for name in given:
        if name not in FIELDS:
            errors.setdefault(name, []).append("unknown field")
    if action == SyncJob.Action.MOVE:
        for name in given:
            if name in FIELDS and name != "stage":
                errors.setdefault(name, []).append("a move takes only stage")
    clean: dict[str, Any] = {}
    checks = {"full_name": lambda v: _text(v, "full_name"), "phone": normalize_phone,
              "stage": lambda v: _text(v, "stage"), "comment": lambda v: _text(v, "comment"),
              "email": lambda v: _email(v), "extra": _extra}
    for name, check in checks.items():
        if name in given and name not in errors:
            try:
                clean[name] = check(given[name])
            except ValueError as exc:
                errors.setdefault(name, []).append(str(exc))
    required: tuple[str, ...] = REQUIRED.get(action, ())
    for name in required:
        if name not in given:
            errors.setdefault(name, []).append("Missing phone number" if name == "phone" else "required")
    if action == SyncJob.Action.UPDATE and not given:
        errors.setdefault("non_field_errors", []).append("nothing to update")
    if "stage" in clean:
        stages = known_stages(portal)
        if stages and clean["stage"] not in stages:
            errors.setdefault("stage", []).append(
                f"unknown stage {clean['stage']!r} (known: {', '.join(sorted(stages)[:20])})")
    if errors:
        raise InvalidRecord(errors)
    return clean


def _email(value: Any) -> str:
    text = _text(value, "email")
    try:
        validate_email(text)
    except ValidationError:
        raise ValueError("not an email address") from None
    return text


def _checked_ids(action: str, external_id: Any, idempotency_key: str | None, source: str) -> tuple[str, str]:
    errors: dict[str, list[str]] = {}
    if action not in ACTIONS:
        errors["action"] = [f"must be one of {', '.join(ACTIONS)}"]
    if source not in SyncJob.Source.values:
        errors["source"] = [f"must be one of {', '.join(SyncJob.Source.values)}"]
    text_id = str(external_id).strip() if isinstance(external_id, str | int) and not isinstance(
        external_id, bool) else ""
    if not EXTERNAL_ID_RE.match(text_id):
        errors["external_id"] = ["required: 1-100 characters, letters, digits and . _ : @ ~ -"]
    key = (idempotency_key or "").strip()
    if key and not IDEMPOTENCY_KEY_RE.match(key):
        errors["idempotency_key"] = ["1-200 printable ASCII characters"]
    if errors:
        raise InvalidRecord(errors)
    return text_id, key


def do_accept_job(portal: Portal, *, action: str, external_id: str, fields: Mapping[str, Any],
                  idempotency_key: str | None = None, source: str = "http", reply_queue: str = "",
                  api_key: ApiKey | None = None,
                  reply_user: Mapping[str, Any] | None = None) -> tuple[SyncJob, bool]:
    """Store one job (and its record, for a create) durably; (job, created). `reply_user` is what replies
    show as "user" (default: the external id and the fields as given)."""
    external_id, key = _checked_ids(action, external_id, idempotency_key, source)
    if key:
        existing = SyncJob.objects.filter(portal=portal, source=source, idempotency_key=key).first()
        if existing is not None:
            return existing, False
    payload = validate_fields(portal, action, fields)
    if len(reply_queue) > 255:
        raise InvalidRecord({"reply_queue": ["at most 255 characters"]})
    user = dict(reply_user) if reply_user is not None else {"external_id": external_id, **{
        str(k): v for k, v in fields.items()}}
    now = timezone.now()
    try:
        with transaction.atomic():
            if action == SyncJob.Action.CREATE:
                record, made = Record.objects.get_or_create(
                    portal=portal, external_id=external_id,
                    defaults={"reply_queue": reply_queue, "api_key": api_key, "stage": ""})
            else:
                found = Record.objects.filter(portal=portal, external_id=external_id).first()
                if found is None:
                    raise UnknownRecord(external_id)
                record, made = found, False
            if not made and (record.reply_queue != reply_queue or record.api_key_id != (api_key.pk if api_key else None)):
                Record.objects.filter(pk=record.pk).update(reply_queue=reply_queue, api_key=api_key)
            job = SyncJob.objects.create(
                portal=portal, record=record, action=action, payload=payload, reply_user=user,
                idempotency_key=key, source=source, reply_queue=reply_queue, api_key=api_key,
                next_attempt_at=now, deadline=now + timedelta(minutes=settings.RECORDS_JOB_DEADLINE_MINUTES),
                created_at=now)
            request_apply_on_commit(portal.pk)
    except IntegrityError:
        # The same idempotency key stored by a concurrent request a moment ago: that job is the answer.
        if key:
            existing = SyncJob.objects.filter(portal=portal, source=source, idempotency_key=key).first()
            if existing is not None:
                return existing, False
        raise
    return job, True
