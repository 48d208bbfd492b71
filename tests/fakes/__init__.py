"""Test doubles: a fake Bitrix24 cloud (OAuth server + portals) served over real HTTP on 127.0.0.1."""
