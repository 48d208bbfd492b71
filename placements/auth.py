"""Our API as called by the framed pages: the frame token is the only credential.

`FrameTokenAuthentication` reads `Authorization: Frame <token>` (or `X-Frame-Token`), `IsFrameUser` /
`IsFrameAdmin` gate the views, and `TenantScopedMixin` scopes every queryset to the token's portal in
`get_queryset()`, so an id of another portal is simply not found (404), never fetched and checked later.
`FrameAPIMixin.load_scoped_item` reads the CRM item an item-bound token was issued for with the user's own
token, and `bitrix24_answers` turns what can go wrong there into the frame's answers (403, 503 or 502).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from django.db.models import QuerySet
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from b24portal.intake import Rejected
from oauth.client import PortalClient
from oauth.errors import B24Error
from oauth.models import PortalToken
from tenants.models import Portal

from .crm import ENTITIES, CrmItem, ItemUnavailable, load_item
from .frames import FramePrincipal, read_frame_token

if TYPE_CHECKING:
    from rest_framework.permissions import _PermissionClass

HEADER_SCHEME = "Frame"


class FrameTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[FramePrincipal, str] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        token = ""
        if header:
            scheme, _, value = header.partition(" ")
            if scheme != HEADER_SCHEME:
                return None
            token = value.strip()
        else:
            token = request.META.get("HTTP_X_FRAME_TOKEN", "").strip()
            if not token:
                return None
        if not token or len(token) > 2048:
            raise exceptions.AuthenticationFailed("invalid frame token")
        try:
            principal = read_frame_token(token)
        except Rejected as exc:
            if exc.status == 403:
                raise exceptions.PermissionDenied(exc.reason) from None
            raise exceptions.AuthenticationFailed(exc.reason) from None
        return principal, token

    def authenticate_header(self, request: Request) -> str:
        return HEADER_SCHEME  # a 401 (not 403) for a missing or expired token


class IsFrameUser(BasePermission):
    message = "a frame token is required"

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, FramePrincipal)


class IsFrameAdmin(IsFrameUser):
    message = "only portal administrators may do this"

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return super().has_permission(request, view) and isinstance(user, FramePrincipal) and bool(user.is_admin)


class Bitrix24Unavailable(exceptions.APIException):
    """Bitrix24 could not answer a read made for the user: a 503 when trying again may work, a 502 otherwise;
    the body names the error code and says whether the page may retry."""

    def __init__(self, exc: B24Error) -> None:
        super().__init__()
        self.status_code = status.HTTP_503_SERVICE_UNAVAILABLE if exc.retryable else status.HTTP_502_BAD_GATEWAY
        # Set after __init__, which would turn the flag into the string "True" (hence the typing's complaint).
        self.detail = {"detail": f"Bitrix24: {exc.code}", "retryable": exc.retryable}  # type: ignore[dict-item]


class FrameAPIMixin(APIView):
    authentication_classes: Sequence[type[BaseAuthentication]] = [FrameTokenAuthentication]
    permission_classes: Sequence[_PermissionClass] = [IsFrameUser]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Once the caller is known: parse any body now (DRF parses lazily), so a body over the JSON limits
        # is a 400 even on a view that ignores its body, instead of that view acting on the request.
        request.data  # noqa: B018

    @property
    def principal(self) -> FramePrincipal:
        return cast(FramePrincipal, self.request.user)  # FrameTokenAuthentication + IsFrameUser guarantee it

    @property
    def portal(self) -> Portal:
        return self.principal.portal

    @property
    def user_id(self) -> int:
        return self.principal.user_id

    # What the user does to get a fresh sign-in when their token is gone: the page they opened it from.
    reopen_hint = "reopen the widget"

    @cached_property
    def user_client(self) -> PortalClient:
        """A REST client with the user's own token, so that Bitrix24's permissions decide what they may read."""
        return PortalClient(self.portal, user_id=self.principal.user_id)

    @contextmanager
    def bitrix24_answers(self) -> Iterator[None]:
        """What goes wrong reading Bitrix24 for the user, as answers: no user token or an item they may not see
        is a 403 that says why, a Bitrix24 error a 503 or 502 (`Bitrix24Unavailable`)."""
        try:
            yield
        except PortalToken.DoesNotExist:
            raise exceptions.PermissionDenied(
                f"Bitrix24 did not pass your sign-in to the app; {self.reopen_hint}") from None
        except ItemUnavailable as exc:
            raise exceptions.PermissionDenied(exc.reason) from None
        except B24Error as exc:
            raise Bitrix24Unavailable(exc) from None

    def load_scoped_item(self) -> CrmItem:
        """The CRM item this frame token was issued for, read again with the user's own token (the number or
        consent asked for must be one of its phones now). Views refuse a token without an item first, each
        with its own words; here it is a 403 in any case."""
        scope = self.principal.item
        if scope is None or scope[0] not in ENTITIES:
            raise exceptions.PermissionDenied("this frame token is not for a CRM item")
        with self.bitrix24_answers():
            return load_item(self.user_client, ENTITIES[scope[0]], scope[1])


class TenantScopedMixin(FrameAPIMixin):
    """Subclasses implement `scoped_queryset(portal)`; everything (list, detail, update) goes through it."""

    def scoped_queryset(self, portal: Portal) -> QuerySet[Any]:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset(self.portal)
