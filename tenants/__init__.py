"""Portals (tenants) and their lifecycle: install, update, uninstall, block; the journal."""
