"""Test settings: real PostgreSQL and Redis on this machine (override with TEST_DATABASE_URL /
TEST_REDIS_URL). pytest-django creates and drops its own test database."""

import os

os.environ["DATABASE_URL"] = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/b24portal")
os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-tests-only-secret-key-0123456789")
# Two keys: the first encrypts, both decrypt (rotation is tested).
os.environ["FIELD_ENCRYPTION_KEY"] = (
    "hL1vlgS3G1uR7S0u2yXkQyR8l1wWkU5n8hQj0Z3rPzY=,Q2xhc3NpY0tleUZvclRlc3RzT25seTAxMjM0NTY3ODk="
)
os.environ["B24_CLIENT_ID"] = "local.5f0c0ffee0ddba11.00000001"
os.environ["B24_CLIENT_SECRET"] = "tests-client-secret"
os.environ["PUBLIC_URL"] = "https://app.b24portal.test"
os.environ["B24_PORTAL_DOMAINS"] = "*.bitrix24.com,*.bitrix24.ru,127.0.0.1:*"
# The fake Bitrix24 serves plain http on 127.0.0.1; production refuses http webhook URLs.
os.environ["B24_WEBHOOK_ALLOW_HTTP"] = "true"
os.environ.setdefault("DEBUG", "false")

from b24portal.settings import *  # noqa: F403
from b24portal.settings import INSTALLED_APPS as BASE_APPS

# The sandbox app is installed for its tests; its views answer 404 unless SANDBOX_ENABLED (off here, as
# DEBUG is): a test that tours it turns the setting on.
INSTALLED_APPS = [*BASE_APPS, *([] if "sandbox" in BASE_APPS else ["sandbox"])]
WHITENOISE_USE_FINDERS = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_URL = os.environ["REDIS_URL"]
# The tests' real workers run tasks in pool threads that end with the worker: a connection kept for reuse
# would outlive the test and hold the test database open. Celery closes it after each task instead.
CELERY_DB_REUSE_MAX = None
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
