"""factory-boy factories for the models (no network; for tests that do not need the fake portal)."""

from __future__ import annotations

import secrets
from datetime import timedelta

import factory
from django.utils import timezone

from oauth.models import PortalToken
from tenants.models import JournalEntry, Portal, hash_application_token

APPLICATION_TOKEN = "ec1b2074a9d3f5c81b6e40d27a95cf38"


class PortalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Portal

    member_id = factory.LazyFunction(lambda: secrets.token_hex(16))
    domain = factory.Sequence(lambda n: f"portal{n}.bitrix24.com")
    rest_endpoint = factory.LazyAttribute(lambda o: f"https://{o.domain}/rest/")
    status = Portal.Status.ACTIVE
    app_local_id = 17
    app_status = Portal.AppStatus.PAID
    license = "en_pro100"
    license_type = "pro100"
    license_family = "pro"
    installed_version = 1
    language = "en"
    application_token_hash = hash_application_token(APPLICATION_TOKEN)
    install_started_at = factory.LazyFunction(timezone.now)
    installed_at = factory.LazyFunction(timezone.now)


class PortalTokenFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PortalToken

    portal = factory.SubFactory(PortalFactory)
    user_id = 1
    is_service = True
    is_admin = True
    access_token = factory.LazyFunction(lambda: secrets.token_hex(32))
    refresh_token = factory.LazyFunction(lambda: secrets.token_hex(32))
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1))
    scope = "crm,placement,messageservice,user"


class JournalEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JournalEntry

    portal = factory.SubFactory(PortalFactory)
    kind = JournalEntry.Kind.LIFECYCLE
    message = factory.Sequence(lambda n: f"event {n}")
    actor = "system"
