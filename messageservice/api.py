"""The SMS part of the JSON API the in-Bitrix24 pages call: the user's own messages, provider accounts
(list, create, update, deactivate, test SMS) and the portal's delivery statistics.

These views act for one portal and one Bitrix24 user but do not authenticate anyone themselves: the app
that routes them supplies `portal`, `user_id` and its authentication and permission classes (placements
composes them with its frame token, see `placements/api.py`). Routed as they are, the project's DRF
defaults (no authenticator, IsAuthenticated) refuse every request. Every queryset goes through
`scoped_queryset(portal)`, so an id of another portal is simply not found (404). Thin: parse, act through
the `do_*` functions, serialize.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.generics import ListAPIView, RetrieveUpdateAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.journal import Actor
from tenants.models import Portal

from .accounts import (
    accounts_for,
    describe_test_result,
    do_deactivate_account,
    do_save_account,
    do_send_test_sms,
)
from .carriers import CARRIER_CHOICES, CARRIERS, carrier_class
from .models import Message, ProviderAccount
from .sending import messages_by_author
from .stats import daily_status_counts

MAX_STAT_DAYS = 90


class PortalUserAPIMixin:
    """What the SMS views need from whoever authenticated the request."""

    @property
    def portal(self) -> Portal:
        raise NotImplementedError("the routing app supplies the request's portal")

    @property
    def user_id(self) -> int:
        raise NotImplementedError("the routing app supplies the request's Bitrix24 user id")

    @property
    def actor(self) -> Actor:
        return Actor.portal_user(self.user_id)

    def scoped_queryset(self, portal: Portal) -> QuerySet[Any]:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset(self.portal)


def validation_response(exc: ValidationError) -> Response:
    detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    return Response(detail, status=status.HTTP_400_BAD_REQUEST)


class MessageSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField()
    account = serializers.CharField(source="account.name", read_only=True)

    class Meta:
        model = Message
        fields = ("id", "recipient", "recipient_raw", "body", "status", "state", "created_at", "author_user_id",
                  "account", "origin")

    def get_status(self, message: Message) -> str:
        return message.display_status


class AccountSerializer(serializers.ModelSerializer):
    """Credentials are write-only: only their key names are shown back."""

    credential_keys = serializers.SerializerMethodField()
    credential_values = serializers.SerializerMethodField()

    class Meta:
        model = ProviderAccount
        fields = ("id", "carrier", "code", "name", "sender", "is_active", "registration_state",
                  "registration_error", "credential_keys", "credential_values")

    def get_credential_keys(self, account: ProviderAccount) -> list[str]:
        return sorted((account.credentials or {}).keys())

    def get_credential_values(self, account: ProviderAccount) -> dict[str, str]:
        """The stored values of the carrier's non-secret fields (e.g. a login); secrets never leave."""
        if account.carrier not in CARRIERS:
            return {}
        plain = carrier_class(account.carrier).plain_names()
        return {name: str(account.credentials[name]) for name in sorted(plain) if (account.credentials or {}).get(name)}


class AccountCreateSerializer(serializers.Serializer):
    carrier = serializers.CharField(max_length=20)
    code = serializers.CharField(max_length=50)
    name = serializers.CharField(max_length=100)
    sender = serializers.CharField(max_length=64, required=False, allow_blank=True)
    credentials = serializers.DictField(child=serializers.CharField(allow_blank=True, max_length=500),
                                        required=False)
    is_active = serializers.BooleanField(required=False)


class TestSmsSerializer(serializers.Serializer):
    to = serializers.CharField(max_length=64)


class MyMessagesView(PortalUserAPIMixin, ListAPIView):
    serializer_class = MessageSerializer
    pagination_class = None

    def scoped_queryset(self, portal: Portal) -> QuerySet[Message]:
        return messages_by_author(portal, self.user_id).select_related("account")[:100]


class AccountListView(PortalUserAPIMixin, APIView):
    def scoped_queryset(self, portal: Portal) -> QuerySet[ProviderAccount]:
        return accounts_for(portal, active_only=False).order_by("-is_active", "name")

    def get(self, request: Request) -> Response:
        return Response({"accounts": AccountSerializer(self.get_queryset(), many=True).data,
                         "carriers": [{"kind": kind, "label": label,
                                       "fields": [f.as_dict() for f in carrier_class(kind).credential_fields]}
                                      for kind, label in CARRIER_CHOICES]})

    def post(self, request: Request) -> Response:
        form = AccountCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            account = do_save_account(self.portal, data=dict(form.validated_data), actor=self.actor)
        except ValidationError as exc:
            return validation_response(exc)
        return Response(AccountSerializer(account).data, status=status.HTTP_201_CREATED)


class AccountDetailView(PortalUserAPIMixin, RetrieveUpdateAPIView):
    serializer_class = AccountSerializer

    def scoped_queryset(self, portal: Portal) -> QuerySet[ProviderAccount]:
        return accounts_for(portal, active_only=False)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        account = self.get_object()  # 404 for another portal's account: the queryset is scoped
        form = AccountCreateSerializer(data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        try:
            account = do_save_account(self.portal, data=dict(form.validated_data), account=account,
                                      actor=self.actor)
        except ValidationError as exc:
            return validation_response(exc)
        return Response(AccountSerializer(account).data)


class AccountDeactivateView(PortalUserAPIMixin, APIView):
    def scoped_queryset(self, portal: Portal) -> QuerySet[ProviderAccount]:
        return accounts_for(portal, active_only=False)

    def post(self, request: Request, pk: int) -> Response:
        account = self.get_queryset().filter(pk=pk).first()
        if account is None:
            raise NotFound("no such provider account")
        do_deactivate_account(self.portal, account, actor=self.actor)
        return Response(AccountSerializer(account).data)


def test_result(message: Message) -> dict[str, Any]:
    text, final = describe_test_result(message)
    return {**MessageSerializer(message).data, "result": text, "final": final}


class AccountTestView(AccountDeactivateView):
    def post(self, request: Request, pk: int) -> Response:
        account = self.get_queryset().filter(pk=pk).first()
        if account is None:
            raise NotFound("no such provider account")
        form = TestSmsSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            message = do_send_test_sms(self.portal, account, to=form.validated_data["to"], actor=self.actor)
        except ValidationError as exc:
            return validation_response(exc)
        message.refresh_from_db()
        return Response(test_result(message), status=status.HTTP_201_CREATED)

    def get(self, request: Request, pk: int) -> Response:
        """The carrier's answer to one test message of this account (`?message=<id>`), in words."""
        raw = str(request.query_params.get("message", ""))
        message = (Message.objects.filter(portal=self.portal, account_id=pk, origin=Message.Origin.TEST,
                                          pk=int(raw)).first() if raw.isdigit() else None)
        if message is None:
            raise NotFound("no such test message")
        return Response(test_result(message))


class StatsView(PortalUserAPIMixin, APIView):
    def get(self, request: Request) -> Response:
        try:
            days = int(request.query_params.get("days", 14))
        except ValueError:
            return Response({"days": ["a number"]}, status=status.HTTP_400_BAD_REQUEST)
        if not 1 <= days <= MAX_STAT_DAYS:
            return Response({"days": [f"from 1 to {MAX_STAT_DAYS}"]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(daily_status_counts(self.portal, days))
