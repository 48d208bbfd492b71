"""Per portal and Bitrix24 user OAuth tokens, encrypted at rest."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone

from b24portal.crypto import EncryptedTextField

# Refresh a little before the stated expiry so a call does not start with a token about to die.
EXPIRY_SKEW = timedelta(seconds=60)


class PortalToken(models.Model):
    """A Bitrix24 user's token pair in one portal. The installing administrator's pair is the portal's
    service token (`is_service`), used by background work; frame tokens belong to whoever opened the frame."""

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="tokens")
    user_id = models.PositiveIntegerField()
    is_service = models.BooleanField(default=False)
    is_admin = models.BooleanField(null=True)
    access_token = EncryptedTextField()
    refresh_token = EncryptedTextField()
    expires_at = models.DateTimeField()
    scope = models.CharField(max_length=1000, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_count = models.PositiveIntegerField(default=0)
    last_refresh_error = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["portal", "user_id"], name="token_unique_portal_user"),
            models.UniqueConstraint(fields=["portal"], condition=Q(is_service=True), name="token_one_service"),
        ]

    def __str__(self) -> str:
        return f"user {self.user_id}{' (service)' if self.is_service else ''}"

    def is_expired(self, now=None) -> bool:
        return (now or timezone.now()) >= self.expires_at - EXPIRY_SKEW

    @property
    def scopes(self) -> list[str]:
        return [s for s in self.scope.replace(" ", ",").split(",") if s]
