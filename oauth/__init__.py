"""OAuth tokens (encrypted), the locked refresh, and the Bitrix24 REST client."""
