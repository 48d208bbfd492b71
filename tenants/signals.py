"""Signals other apps listen to (tenants never imports placements or messageservice)."""

from django.dispatch import Signal

# Sent inside the transaction that purges a portal's data (uninstall with CLEAN=1, stale install).
# Receivers delete what they keep for the portal. Arguments: portal.
portal_purged = Signal()
