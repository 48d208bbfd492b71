"""The JSON API the framed pages call (frame token only; see auth.py). Thin: parse, access through the
portal-scoped getters, act through the messageservice `do_*` functions, serialize.

The SMS views (the user's messages, provider accounts, delivery statistics) live in `messageservice.api`;
placements composes them here with its frame-token authentication and permissions.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messageservice import api as sms_api
from messageservice import consent as consent_api
from messageservice.accounts import get_account
from messageservice.api import MessageSerializer, validation_response
from messageservice.models import ProviderAccount
from messageservice.phones import mask_phone
from messageservice.sending import MAX_BODY_CHARS, messages_for_crm_item, widget_message_by_key

from .auth import FrameAPIMixin, IsFrameAdmin, TenantScopedMixin
from .crm import ENTITIES
from .models import Binding
from .sending import do_send_from_item


# -- CRM item: SMS history and sending -----------------------------------------------------------------------
class ItemMixin(FrameAPIMixin):
    def item_scope(self, entity: str, item_id: int) -> tuple[str, int]:
        entity = entity.upper()
        if entity not in ENTITIES:
            raise NotFound("unknown CRM entity")
        # The token must have been issued for exactly this item: the user was shown it with their own rights.
        if self.principal.item != (entity, item_id):
            raise PermissionDenied("this frame token is not for this item")
        return entity, item_id


CLIENT_KEY_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")


class SendSerializer(serializers.Serializer):
    account = serializers.IntegerField(min_value=1)
    to = serializers.CharField(max_length=64)
    body = serializers.CharField(max_length=MAX_BODY_CHARS, trim_whitespace=False)
    client_key = serializers.CharField(max_length=64, required=False)  # or the Idempotency-Key header


class ItemMessagesView(ItemMixin, APIView):
    def get(self, request: Request, entity: str, item_id: int) -> Response:
        entity, item_id = self.item_scope(entity, item_id)
        rows = messages_for_crm_item(self.portal, ENTITIES[entity].owner_type_id, item_id).select_related(
            "account")[:100]
        return Response({"messages": MessageSerializer(rows, many=True).data})

    def post(self, request: Request, entity: str, item_id: int) -> Response:
        entity, item_id = self.item_scope(entity, item_id)
        form = SendSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        # One key per submission, made by the page: the same key again returns the first message.
        client_key = request.headers.get("Idempotency-Key") or form.validated_data.get("client_key") or ""
        if not CLIENT_KEY_RE.fullmatch(client_key):
            return Response({"client_key": ["an Idempotency-Key header (8-64 of A-Z a-z 0-9 _ -) is required"]},
                            status=status.HTTP_400_BAD_REQUEST)
        repeated = widget_message_by_key(self.portal, client_key)
        if repeated is not None:  # a second click: answer with the first message, before any REST call
            if repeated.author_user_id != self.principal.user_id:
                return Response({"detail": "this Idempotency-Key was used for another submission"},
                                status=status.HTTP_409_CONFLICT)
            return Response(MessageSerializer(repeated).data, status=status.HTTP_200_OK)
        try:
            account = get_account(self.portal, form.validated_data["account"])
        except ProviderAccount.DoesNotExist:
            raise NotFound("no such provider account") from None
        # Read the item again with the user's own token: the number must be one of ITS phones, now.
        item = self.load_scoped_item()
        to = form.validated_data["to"].strip()
        if to not in {phone.value for phone in item.phones}:
            return Response({"to": ["not one of this item's phone numbers"]}, status=status.HTTP_400_BAD_REQUEST)
        body = form.validated_data["body"]
        try:
            message, created = do_send_from_item(self.portal, account=account, to=to, body=body, entity=entity,
                                                 item_id=item_id, bindings=item.bindings(),
                                                 user_id=self.principal.user_id, client_key=client_key)
        except ValidationError as exc:
            return validation_response(exc)
        if message.author_user_id != self.principal.user_id:
            return Response({"detail": "this Idempotency-Key was used for another submission"},
                            status=status.HTTP_409_CONFLICT)
        return Response(MessageSerializer(message).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


# -- the app page: the user's own messages, and (admins) accounts, stats, bindings -------------------------------
class MyMessagesView(FrameAPIMixin, sms_api.MyMessagesView):
    pass


class AccountListView(FrameAPIMixin, sms_api.AccountListView):
    permission_classes = [IsFrameAdmin]


class AccountDetailView(FrameAPIMixin, sms_api.AccountDetailView):
    permission_classes = [IsFrameAdmin]


class AccountDeactivateView(FrameAPIMixin, sms_api.AccountDeactivateView):
    permission_classes = [IsFrameAdmin]


class AccountTestView(FrameAPIMixin, sms_api.AccountTestView):
    permission_classes = [IsFrameAdmin]


class StatsView(FrameAPIMixin, sms_api.StatsView):
    permission_classes = [IsFrameAdmin]


class BindingSerializer(serializers.ModelSerializer):
    class Meta:
        model = Binding
        fields = ("kind", "code", "state", "last_checked_at", "last_error")


class BindingListView(TenantScopedMixin, ListAPIView):
    permission_classes = [IsFrameAdmin]
    serializer_class = BindingSerializer
    pagination_class = None

    def scoped_queryset(self, portal: Any) -> QuerySet[Binding]:
        return Binding.objects.filter(portal=portal).order_by("kind", "code")


# -- SMS consent ---------------------------------------------------------------------------------------------
class ConsentSerializer(serializers.Serializer):
    phone = serializers.CharField(max_length=64)
    opted_in = serializers.BooleanField()


def consent_row(phone: str, decision: Any) -> dict[str, Any]:
    return {"phone": phone, "opted_in": None if decision is None else decision.opted_in,
            "changed_at": decision.changed_at if decision else None,
            "changed_by_user_id": decision.changed_by_user_id if decision else None,
            "source": decision.source if decision else ""}


class ConsentView(FrameAPIMixin, APIView):
    """A consent decision for one phone of the CRM item the frame token was issued for (the consent field
    hands out an item-bound token): the item is read again with the user's own token, so Bitrix24 decides
    whether they may see it, and only its phones are accepted. Anything else: 403/400, nothing stored."""

    reopen_hint = "reopen the field"

    def post(self, request: Request) -> Response:
        scope = self.principal.item
        if scope is None or scope[0] not in ENTITIES:
            raise PermissionDenied("consent can only be changed from a CRM item's consent field")
        form = ConsentSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        phone = form.validated_data["phone"].strip()
        item = self.load_scoped_item()
        try:
            decision = consent_api.do_set_item_consent(
                self.portal, phone=phone, opted_in=form.validated_data["opted_in"], user_id=self.principal.user_id,
                item_phones=[p.value for p in item.phones], source="userfield")
        except consent_api.NotAnItemPhone as exc:
            raise PermissionDenied(exc.reason) from None
        except ValidationError as exc:
            return validation_response(exc)
        return Response({**consent_row(phone, decision), "masked": mask_phone(decision.phone)})
