"""The fake portal's /oauth/authorize/ page and its method confirmation, as the sign-in and method
confirmation tests rely on them."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from tests.fakes.bitrix24 import FakeBitrix24Cloud

REDIRECT = "https://app.example.test/signin/callback/"


def test_the_authorize_page_asks_the_logged_in_user_and_redirects_with_the_documented_params() -> None:
    with FakeBitrix24Cloud() as cloud:
        cloud.redirect_uris[cloud.client_id] = REDIRECT
        portal = cloud.create_portal()
        url = f"{portal.base_url}/oauth/authorize/"
        ask = {"client_id": cloud.client_id, "state": "s1"}

        assert requests.get(url, params=ask, timeout=5).status_code == 401  # nobody logged in
        assert requests.get(url, params={**ask, "client_id": "app.unknown"}, timeout=5).status_code == 400
        portal.browser_user = 3
        page = requests.get(url, params=ask, timeout=5)
        assert page.status_code == 200 and "id='allow'" in page.text and "id='deny'" in page.text

        allowed = requests.post(url, data={**ask, "decision": "allow"}, allow_redirects=False, timeout=5)
        denied = requests.post(url, data={**ask, "decision": "deny"}, allow_redirects=False, timeout=5)

        query = parse_qs(urlsplit(allowed.headers["Location"]).query)
        assert allowed.headers["Location"].startswith(REDIRECT)
        assert set(query) == {"code", "state", "domain", "member_id", "scope", "server_domain"}
        assert (query["state"], query["domain"], query["member_id"]) == (["s1"], [portal.domain], [portal.member_id])
        token = requests.get(cloud.oauth_url, timeout=5, params={
            "grant_type": "authorization_code", "client_id": cloud.client_id, "client_secret": cloud.client_secret,
            "code": query["code"][0]}).json()
        assert token["member_id"] == portal.member_id and "user_id" not in token  # spec §2
        assert parse_qs(urlsplit(denied.headers["Location"]).query)["error"] == ["access_denied"]
        portal.uninstall()
        assert requests.get(url, params=ask, timeout=5).status_code == 400


def test_a_method_needing_confirmation_waits_per_access_token() -> None:
    with FakeBitrix24Cloud() as cloud:
        portal = cloud.create_portal()
        portal.require_confirmation("app.info")
        first = portal.issue_tokens()["access_token"]

        def call(token: str) -> tuple[int, str]:
            answer = requests.post(portal.client_endpoint + "app.info", json={"auth": token}, timeout=5)
            return answer.status_code, answer.json().get("error", "")

        assert call(first) == (401, "METHOD_CONFIRM_WAITING")
        portal.decide_method("app.info", confirmed=True)  # nothing bound: no delivery, the grant still holds
        assert call(first)[0] == 200
        second = portal.issue_tokens()["access_token"]
        assert call(second) == (401, "METHOD_CONFIRM_WAITING")
        portal.decide_method("app.info", confirmed=False)
        assert call(second) == (403, "METHOD_CONFIRM_DENIED")
