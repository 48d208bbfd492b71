"""Fixtures for the REST client tests: a Portal row wired to a fake portal, with a stored service token
(quicker than the install flow, which tests/oauth/test_capabilities.py exercises)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.bitrix24 import FakePortal


@pytest.fixture
def portal(db: Any, fake_portal: FakePortal):
    from oauth.tokens import TokenGrant, store_tokens
    from tests.factories import PortalFactory

    row = PortalFactory(member_id=fake_portal.member_id, domain=fake_portal.domain,
                        rest_endpoint=fake_portal.client_endpoint)
    tokens = fake_portal.issue_tokens(user_id=1, is_admin=True)
    store_tokens(row, TokenGrant(tokens["access_token"], tokens["refresh_token"], tokens["expires_in"],
                                 tokens["scope"], 1), user_id=1, is_service=True, is_admin=True)
    return row


@pytest.fixture
def client_for(portal):
    from oauth.client import PortalClient

    def make(**kwargs: Any) -> PortalClient:
        return PortalClient(portal, **kwargs)

    return make


def register_echo(fake_portal: FakePortal, name: str = "test.echo") -> None:
    fake_portal.register_method(name, lambda p, params, ctx: {k: v for k, v in params.items() if k != "auth"})


def register_items(fake_portal: FakePortal, count: int, name: str = "test.item.list") -> None:
    """A list method over `count` rows with ID 1..count, honouring start, `>ID` filter and start=-1."""
    from tests.fakes.bitrix24 import paginate

    rows = [{"ID": str(i), "TITLE": f"item {i}"} for i in range(1, count + 1)]

    def handler(p: FakePortal, params: dict[str, Any], ctx: Any) -> Any:
        flt = params.get("filter") or {}
        above = int(flt.get(">ID", 0) or 0)
        return paginate([r for r in rows if int(r["ID"]) > above], params)

    fake_portal.register_method(name, handler)
