"""What the REST layer tells the portal lifecycle, without deciding it (installs.receivers acts on these).

Both are sent after the token row's transaction, so a receiver's status change is kept whatever the
caller does next.
"""

from django.dispatch import Signal

# A refresh was refused by the OAuth server. Arguments: portal, token (PortalToken), error (B24Error:
# B24TokensRevoked for invalid_grant / invalid_client, B24PaymentRequired for PAYMENT_REQUIRED).
token_refresh_refused = Signal()

# Bitrix24 named a new REST endpoint for the portal (a refresh answer's client_endpoint on an allowed host,
# or a 302 from the old address): the portal was renamed. Arguments: portal, domain, rest_endpoint, source.
portal_endpoint_changed = Signal()

# Bitrix24 answered 401 through a portal's incoming webhook (deleted, or its secret regenerated): nothing
# will work until staff add its new URL. Arguments: portal, error (B24Error).
webhook_refused = Signal()
