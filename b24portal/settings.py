"""Settings, read from the environment (django-environ) and checked at start-up by system checks.

Every variable is listed in docker/.env.example and the README. With no DATABASE_URL / REDIS_URL the
service runs on embedded defaults: SQLite and kombu's filesystem transport (no server needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ

BASE_DIR = Path(__file__).resolve().parent.parent



class _RecordingEnv(environ.Env):
    """django-environ's reader, recording the name of every variable read (see ENV_SETTINGS at the end)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, None] = {}

    def get_value(self, var: str, cast: Any = None, default: Any = environ.Env.NOTSET,
                  parse_default: bool = False) -> Any:
        self.names.setdefault(var, None)
        return super().get_value(var, cast=cast, default=default, parse_default=parse_default)


# Every setting below is read through `env`, so ENV_SETTINGS lists them all; tests/core/
# test_settings_documented.py checks that docker/.env.example and the README's Configuration table agree.
env = _RecordingEnv()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
# Local state of the embedded defaults (SQLite, file broker, generated dev keys, file rate limiter).
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))

# A development key is generated into var/ on first start so that "make run" needs no set-up; the
# production check (b24portal.E001) refuses it when DEBUG is off.
DEV_SECRET_FILE = VAR_DIR / "dev-secret-key"


def _dev_secret(path: Path, length: int = 50) -> str:
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(length))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="") or _dev_secret(DEV_SECRET_FILE)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"] if DEBUG else ["localhost", "127.0.0.1"])

# The public https base of this app; every handler URL registered in portals is built from it.
PUBLIC_URL = env.str("PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")

# --- Sandbox (development only) -------------------------------------------------------------------
# A Bitrix24 look-alike at /sandbox/ (the `sandbox` app), built from the emulation the tests use. On by
# default with DEBUG; b24portal/checks.py refuses it at start-up when DEBUG is off, and its URLs answer 404
# whenever it is off. Its portal lives on this service's own address (REST at PUBLIC_URL/rest/, the OAuth
# server under PUBLIC_URL/sandbox/), so the workers reach it over real HTTP like a real portal.
SANDBOX_ENABLED = env.bool("SANDBOX_ENABLED", default=DEBUG)
SANDBOX_DOMAIN = urlsplit(PUBLIC_URL).netloc  # the sandbox portal's DOMAIN
# With no Bitrix24 app configured, the app is the sandbox's own: zero configuration for `make run`.
B24_CLIENT_ID = env.str("B24_CLIENT_ID", default="")
_SANDBOX_APP = SANDBOX_ENABLED and not B24_CLIENT_ID

# --- Bitrix24 application ------------------------------------------------------------------------
B24_CLIENT_ID = B24_CLIENT_ID or ("local.5a1db0c5b24p0rta.5a1db0c5" if _SANDBOX_APP else "")
B24_CLIENT_SECRET = env.str("B24_CLIENT_SECRET", default="sandbox-client-secret" if _SANDBOX_APP else "")
B24_OAUTH_URL = env.str("B24_OAUTH_URL", default=f"{PUBLIC_URL}/sandbox/oauth/token/" if _SANDBOX_APP
                        else "https://oauth.bitrix.info/oauth/token/")
B24_SERVER_ENDPOINT = env.str("B24_SERVER_ENDPOINT", default=f"{PUBLIC_URL}/sandbox/rest/" if _SANDBOX_APP
                              else "https://oauth.bitrix.info/rest/")
# Hosts we accept installs, events and frames from, and the only hosts we ever call with a token.
# Wildcards match one or more labels ("*.bitrix24.com"); a ":*" suffix allows any port (tests).
B24_CLOUD_ZONES = [
    "ru", "com", "de", "eu", "es", "fr", "it", "pl", "uk", "by", "kz", "ua", "in", "com.br", "co",
    "mx", "cn", "jp", "id", "vn", "tr", "site", "shop", "online", "info", "net", "su", "tech",
]  # fmt: skip
B24_PORTAL_DOMAINS = env.list(
    "B24_PORTAL_DOMAINS", default=[f"*.bitrix24.{zone}" for zone in B24_CLOUD_ZONES]
)
# An install that has not finished after this long is cleaned up by a periodic task.
B24_INSTALL_TIMEOUT_MINUTES = env.int("B24_INSTALL_TIMEOUT_MINUTES", default=60)
# A pending install run that shows no progress this long (its task was lost: broker down at commit) is
# dispatched again by a periodic sweeper.
B24_INSTALL_REDISPATCH_AFTER_SECONDS = env.int("B24_INSTALL_REDISPATCH_AFTER_SECONDS", default=120)
# Largest request body accepted from Bitrix24 on install, event and handler endpoints.
B24_MAX_BODY_BYTES = env.int("B24_MAX_BODY_BYTES", default=64 * 1024)
# Unauthenticated requests (install, events, frames): token proofs that reach a portal, per portal domain
# (their own small share of its REST limit); a failed proof is refused again without asking for this long.
B24_PROOF_RATE_PER_MINUTE = env.float("B24_PROOF_RATE_PER_MINUTE", default=12.0)
B24_PROOF_BURST = env.int("B24_PROOF_BURST", default=6)
# Incoming-webhook URLs staff add in admin must be https; http only for development against a local portal.
B24_WEBHOOK_ALLOW_HTTP = env.bool("B24_WEBHOOK_ALLOW_HTTP", default=False)
B24_FAILED_PROOF_TTL = env.int("B24_FAILED_PROOF_TTL", default=300)
# How long a proven administrator stays proven (an install page reloaded, a frame token's admin claim)
# before user.admin is asked again: a demoted administrator loses admin rights within this time.
B24_ADMIN_PROOF_SECONDS = env.int("B24_ADMIN_PROOF_SECONDS", default=300)
# Per source address (DRF throttle rates): install and frame POSTs come from browsers, events from
# Bitrix24's servers (which serve many portals from few addresses, hence the higher rate).
B24_THROTTLE_FRAMES = env.str("B24_THROTTLE_FRAMES", default="60/min")
B24_THROTTLE_EVENTS = env.str("B24_THROTTLE_EVENTS", default="1200/min")
B24_HTTP_TIMEOUT = (env.float("B24_CONNECT_TIMEOUT", default=5.0), env.float("B24_READ_TIMEOUT", default=60.0))
B24_RATE_HEADROOM = env.float("B24_RATE_HEADROOM", default=0.8)
# Longest wait for a REST permit inside a Celery task (longer: the task is retried later instead of
# sleeping) and in web requests. A couple of seconds lets a task pace a few calls at 1.6 req/s.
B24_RATE_TASK_MAX_WAIT = env.float("B24_RATE_TASK_MAX_WAIT", default=2.0)
B24_RATE_WEB_MAX_WAIT = env.float("B24_RATE_WEB_MAX_WAIT", default=5.0)
# Bitrix24's per-method execution-time budget (seconds per 10 minutes) and the share of it after which we
# defer that method until its window resets; the first back-off after a 503 QUERY_LIMIT_EXCEEDED.
B24_OPERATING_LIMIT = env.float("B24_OPERATING_LIMIT", default=480.0)
B24_OPERATING_DEFER_RATIO = env.float("B24_OPERATING_DEFER_RATIO", default=0.85)
B24_RATE_503_BACKOFF = env.float("B24_RATE_503_BACKOFF", default=1.0)
# One call-log row per HTTP request to Bitrix24: raw rows kept this many days, daily roll-ups longer;
# a REST failure is journaled at most once per portal, code and method per this many seconds.
B24_CALL_LOG_ENABLED = env.bool("B24_CALL_LOG_ENABLED", default=True)
B24_CALL_LOG_RETENTION_DAYS = env.int("B24_CALL_LOG_RETENTION_DAYS", default=14)
B24_CALL_LOG_DAILY_RETENTION_DAYS = env.int("B24_CALL_LOG_DAILY_RETENTION_DAYS", default=400)
# Routine successful calls of periodic checks are counted, not logged row by row; counts are written this often.
B24_CALL_LOG_COUNT_FLUSH_SECONDS = env.int("B24_CALL_LOG_COUNT_FLUSH_SECONDS", default=60)
B24_REST_JOURNAL_INTERVAL = env.int("B24_REST_JOURNAL_INTERVAL", default=3600)
# The BX24 JS SDK our frame pages load (tests point it at a stub).
B24_JS_SDK_URL = env.str("B24_JS_SDK_URL", default=f"{PUBLIC_URL}/sandbox/bx24.js" if _SANDBOX_APP
                         else "https://api.bitrix24.com/api/v1/")
# Widgets bound in every portal (CRM list-menu sliders); the SMS-consent field type is always registered.
B24_PLACEMENTS = env.list("B24_PLACEMENTS", default=[
    "CRM_LEAD_LIST_MENU", "CRM_DEAL_LIST_MENU", "CRM_CONTACT_LIST_MENU", "CRM_COMPANY_LIST_MENU",
])
# The SMS-consent custom field type (full code rest_<app id>_<code>, at most 50 characters) and the CRM
# entities it is added to; how often widget bindings are reconciled with each portal.
B24_CONSENT_TYPE_CODE = env.str("B24_CONSENT_TYPE_CODE", default="sms_consent")
B24_CONSENT_FIELD_ENTITIES = env.list("B24_CONSENT_FIELD_ENTITIES", default=["CONTACT", "LEAD"])
# Periodic checks (tenants.schedule): each portal's safety sweep is due once per its interval, spread over
# it; a beat tick claims at most B24_DUE_CHECKS_PER_TICK due portals and enqueues B24_DUE_CHECKS_PER_TASK a task.
B24_DUE_CHECKS_TICK_SECONDS = env.int("B24_DUE_CHECKS_TICK_SECONDS", default=60)
B24_DUE_CHECKS_PER_TICK = env.int("B24_DUE_CHECKS_PER_TICK", default=2000)
B24_DUE_CHECKS_PER_TASK = env.int("B24_DUE_CHECKS_PER_TASK", default=50)
B24_CAPABILITIES_CHECK_SECONDS = env.int("B24_CAPABILITIES_CHECK_SECONDS", default=86400)
B24_BINDINGS_RECONCILE_SECONDS = env.int("B24_BINDINGS_RECONCILE_SECONDS", default=86400)
# A service token not refreshed for this many days is refreshed by the daily keep-alive check (spec §2: an
# unused refresh token dies; 180 days in the docs, some portals behaved like 28).
B24_TOKEN_KEEPALIVE_DAYS = env.int("B24_TOKEN_KEEPALIVE_DAYS", default=20)
# Work parked on 401 METHOD_CONFIRM_WAITING fails when no administrator decided within this many hours.
B24_METHOD_CONFIRM_TIMEOUT_HOURS = env.int("B24_METHOD_CONFIRM_TIMEOUT_HOURS", default=72)
# Lifetime of the signed token a verified frame page uses for its API calls.
B24_FRAME_TOKEN_MAX_AGE = env.int("B24_FRAME_TOKEN_MAX_AGE", default=3600)

# Fernet keys, comma-separated: new writes use the first, reads try all (rotation). Unset, a development
# key is generated into var/; the start-up check refuses that when DEBUG is off.
FIELD_ENCRYPTION_KEY = env.list("FIELD_ENCRYPTION_KEY", default=[])
DEV_FIELD_KEY_FILE = VAR_DIR / "dev-field-key"
if not FIELD_ENCRYPTION_KEY:
    from cryptography.fernet import Fernet

    DEV_FIELD_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    if not DEV_FIELD_KEY_FILE.exists():
        DEV_FIELD_KEY_FILE.write_text(Fernet.generate_key().decode())
        DEV_FIELD_KEY_FILE.chmod(0o600)
    FIELD_ENCRYPTION_KEY = [DEV_FIELD_KEY_FILE.read_text().strip()]

# --- SMS (messageservice); defaults are documented in the README -----------------------------------
SMS_SEND_DEADLINE_MINUTES = env.int("SMS_SEND_DEADLINE_MINUTES", default=60)
SMS_RETRY_BASE_SECONDS = env.int("SMS_RETRY_BASE_SECONDS", default=10)
SMS_RETRY_MAX_SECONDS = env.int("SMS_RETRY_MAX_SECONDS", default=600)
SMS_CLAIM_TIMEOUT_SECONDS = env.int("SMS_CLAIM_TIMEOUT_SECONDS", default=300)
SMS_REDISPATCH_AFTER_SECONDS = env.int("SMS_REDISPATCH_AFTER_SECONDS", default=120)
# The SMS worker's outbox dispatcher is woken by NOTIFY; it also drains this often, as a safety net.
SMS_DISPATCH_POLL_SECONDS = env.int("SMS_DISPATCH_POLL_SECONDS", default=5)
# Widget sends: a CRM timeline comment (outbox row) whose task was lost is dispatched again after this long.
TIMELINE_REDISPATCH_AFTER_SECONDS = env.int("TIMELINE_REDISPATCH_AFTER_SECONDS", default=120)
# The sandbox's carrier answers at once: poll it sooner so its timeline moves within seconds.
SMS_FIRST_POLL_SECONDS = env.int("SMS_FIRST_POLL_SECONDS", default=3 if _SANDBOX_APP else 15)
SMS_POLL_BASE_SECONDS = env.int("SMS_POLL_BASE_SECONDS", default=5 if _SANDBOX_APP else 30)
SMS_POLL_MAX_SECONDS = env.int("SMS_POLL_MAX_SECONDS", default=1800)
SMS_STATUS_TTL_HOURS = env.int("SMS_STATUS_TTL_HOURS", default=48)
SMS_TTL_SENT_BECOMES = env.str("SMS_TTL_SENT_BECOMES", default="sent")
SMS_SENDER_RECONCILE_SECONDS = env.int("SMS_SENDER_RECONCILE_SECONDS", default=86400)
# Messages handled per status-poll task run, and how long "message not found" right after sending is not
# final yet; status-push batches per task run, and attempts before a status Bitrix24 keeps refusing is dropped.
SMS_POLL_CHUNK = env.int("SMS_POLL_CHUNK", default=500)
SMS_NOT_FOUND_GRACE_SECONDS = env.int("SMS_NOT_FOUND_GRACE_SECONDS", default=600)
SMS_PUSH_BATCHES_PER_RUN = env.int("SMS_PUSH_BATCHES_PER_RUN", default=20)
SMS_PUSH_MAX_ATTEMPTS = env.int("SMS_PUSH_MAX_ATTEMPTS", default=5)
# Admin message list: above this many matching rows a filtered list shows "N+" instead of counting.
SMS_ADMIN_COUNT_CAP = env.int("SMS_ADMIN_COUNT_CAP", default=10_000)
# GET /metrics (Prometheus): allowed with `Authorization: Bearer <METRICS_TOKEN>` or from an address in
# METRICS_ALLOWED_IPS (addresses or networks, comma-separated). Neither set: the endpoint refuses everyone.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])

# --- Records API (records/): an external system's records synced to CRM leads ------------------------
# Leads we create carry ORIGINATOR_ID = this and ORIGIN_ID = the record's external id (how a create whose
# answer was lost is found instead of added twice).
RECORDS_ORIGINATOR_ID = env.str("RECORDS_ORIGINATOR_ID", default="b24portal")
# A job's transient failures (limits, 5xx, timeouts) are retried with back-off until this long after intake.
RECORDS_JOB_DEADLINE_MINUTES = env.int("RECORDS_JOB_DEADLINE_MINUTES", default=1440)
# A job or reply claimed this long ago by a worker that never settled it is taken up again by the sweeper;
# an owed job or reply whose task was lost is dispatched again after RECORDS_REDISPATCH_AFTER_SECONDS.
RECORDS_CLAIM_TIMEOUT_SECONDS = env.int("RECORDS_CLAIM_TIMEOUT_SECONDS", default=300)
RECORDS_REDISPATCH_AFTER_SECONDS = env.int("RECORDS_REDISPATCH_AFTER_SECONDS", default=120)
# Batches (of up to 50 commands) one apply task sends before it hands the rest to a fresh task.
RECORDS_BATCHES_PER_RUN = env.int("RECORDS_BATCHES_PER_RUN", default=20)
# Region for phone numbers written without a country code (ISO 3166 alpha-2; empty: such numbers are refused).
RECORDS_PHONE_REGION = env.str("RECORDS_PHONE_REGION", default="")
# Replies (HTTP callbacks): attempts before a reply is marked failed, and the callback's read timeout.
RECORDS_REPLY_MAX_ATTEMPTS = env.int("RECORDS_REPLY_MAX_ATTEMPTS", default=12)
RECORDS_CALLBACK_TIMEOUT = env.float("RECORDS_CALLBACK_TIMEOUT", default=10.0)
# Records API requests per source address (DRF throttle rate), and the browser origins allowed by CORS
# on /api/v1/ only (comma-separated, e.g. https://crm.example.com; empty: no cross-origin access).
RECORDS_THROTTLE = env.str("RECORDS_THROTTLE", default="1200/min")
RECORDS_CORS_ALLOWED_ORIGINS = env.list("RECORDS_CORS_ALLOWED_ORIGINS", default=[])

# --- AMQP intake and offline events (records/amqp.py, records/offline.py) ---------------------------------
# The RabbitMQ that external systems publish records to (amqp://user:password@host:5672/vhost). Empty: the AMQP
# intake is off (`make run` does not start `consume_records`, AMQP replies cannot be delivered).
AMQP_URL = env.str("AMQP_URL", default="")
# Refused messages are published to this exchange (fanout) and queue, with the reason in x-b24portal-reason.
AMQP_DEAD_LETTER_QUEUE = env.str("AMQP_DEAD_LETTER_QUEUE", default="b24portal.records.dead-letter")
# How often each bound portal's offline CRM events are read (changes made in Bitrix24 flow back).
RECORDS_OFFLINE_POLL_SECONDS = env.int("RECORDS_OFFLINE_POLL_SECONDS", default=60)

# --- Django-------------------------------------------------------------------------------------
INSTALLED_APPS = [
    "console.apps.ConsoleAdminConfig",  # django.contrib.admin whose home is the dashboard
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "b24portal",
    "tenants",
    "oauth",
    "installs",
    "messageservice",
    "records",
    "placements",
    "console",
    "signin",
    "cabinet",
    *(["sandbox"] if SANDBOX_ENABLED else []),
]

MIDDLEWARE = [
    # CORS answers only /api/v1/ (CORS_URLS_REGEX) and only for RECORDS_CORS_ALLOWED_ORIGINS.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files under gunicorn (admin, frame pages)
    # Flags Bitrix24's server-to-server POSTs (the SMS handler, `@server_to_server`): the session, locale,
    # CSRF, auth and messages middleware (b24portal.middleware's subclasses of Django's) pass them straight on.
    "b24portal.middleware.ServerToServerMiddleware",
    "b24portal.middleware.SessionMiddleware",
    "b24portal.middleware.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "b24portal.middleware.CsrfViewMiddleware",
    "b24portal.middleware.AuthenticationMiddleware",
    "b24portal.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "b24portal.logging.RequestContextMiddleware",
]

ROOT_URLCONF = "b24portal.urls"
WSGI_APPLICATION = "b24portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    }
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    VAR_DIR.mkdir(exist_ok=True)
    # Web, worker and beat share the file: wait for the write lock instead of failing at once. A deferred
    # transaction that reads and then writes cannot wait (SQLite answers "database is locked" at once when
    # another process holds the lock), so transactions take the write lock when they begin (IMMEDIATE), and
    # WAL lets readers go on while one process writes.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "timeout": 20, "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"})

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ru", "Русский")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles"))
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # filled by collectstatic in production images
# Without collectstatic (make run, tests) WhiteNoise serves straight from the apps' static folders.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=DEBUG)

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The session cookie serves only our own site (sign-in, cabinet): first-party, Lax. Frame pages never use it
# (they carry a signed frame token instead), so no SameSite=None cookie is needed for Bitrix24's iframes.
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
# Limits of every JSON we parse from outside (b24portal.inputs.parse_json_limited): PLACEMENT_OPTIONS, API
# bodies; deeper nesting or a larger text is refused with a 4xx instead of a RecursionError.
INPUT_JSON_MAX_DEPTH = env.int("INPUT_JSON_MAX_DEPTH", default=32)
INPUT_JSON_MAX_BYTES = env.int("INPUT_JSON_MAX_BYTES", default=64 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = B24_MAX_BODY_BYTES
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "UNAUTHENTICATED_USER": None,
    # JSON only, within INPUT_JSON_MAX_BYTES / INPUT_JSON_MAX_DEPTH (a 400 with the reason, never a 500);
    # no API view takes forms.
    "DEFAULT_PARSER_CLASSES": ["b24portal.parsers.LimitedJSONParser"],
}
CORS_URLS_REGEX = r"^/api/v1/.*$"
CORS_ALLOWED_ORIGINS = RECORDS_CORS_ALLOWED_ORIGINS
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type", "idempotency-key")
CORS_ALLOW_METHODS = ("GET", "OPTIONS", "PATCH", "POST")
SPECTACULAR_SETTINGS = {"TITLE": "b24portal API", "VERSION": "0.1.0"}

# --- Celery ----------------------------------------------------------------------------------------
CELERY_BROKER_DIR = VAR_DIR / "celery-broker"
if REDIS_URL:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": 3600}
else:
    # Embedded default: a broker that needs no server. Web, worker and beat exchange messages as files.
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
    for folder in ("queue", "processed", "control"):
        (CELERY_BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fix-up closes the database connection before and after every task unless this is set,
# whatever CONN_MAX_AGE says: a new PostgreSQL backend (connect, catalog caches) for every SMS sent. With it,
# the fix-up only recycles connections every this many tasks, and b24portal.celery closes a connection
# that is broken or older than CONN_MAX_AGE around each task, as Django does around each request.
CELERY_DB_REUSE_MAX: int | None = 1000
# Periodic work; each app adds its own entries in its AppConfig.ready() through b24portal.celery.
CELERY_BEAT_SCHEDULE: dict = {}
# Queues by urgency (README "Workers and queues"). A customer's SMS never waits behind housekeeping: the
# Procfile and docker-compose run a worker that consumes `sms` and `sms_status` only, and a general worker
# for the rest.
#   sms          send, the sweepers that put a lost or stuck send right
#   sms_status   status poll and push and the beat dispatchers that enqueue them: the same SMS worker
#                consumes it beside `sms`, and the Redis transport alternates between the two, so a status
#                never waits behind a send backlog (tens of thousands of `send_message` in a burst)
#   lifecycle    install steps, app events, verify, staff actions (rebind, sender sync, ...): someone waits
#   maintenance  periodic reconciles, capability checks, call-log roll-ups and pruning, cleanups
# Routed by task name; a task with no route goes to the default queue (consumed by the general worker).
CELERY_TASK_DEFAULT_QUEUE = "lifecycle"
CELERY_TASK_ROUTES: dict[str, dict[str, str]] = {
    **{name: {"queue": "sms"} for name in (
        "messageservice.tasks.send_message",
        "messageservice.tasks.sweep_stale_claims",
        "messageservice.tasks.redispatch_lost_messages",
    )},
    **{name: {"queue": "sms_status"} for name in (
        "messageservice.delivery.dispatch_status_polls",
        "messageservice.delivery.poll_account",
        "messageservice.delivery.poll_accounts",
        "messageservice.delivery.dispatch_status_pushes",
        "messageservice.delivery.push_portal_statuses",
        "messageservice.delivery.push_statuses",
    )},
    **{name: {"queue": "lifecycle"} for name in (
        "tenants.tasks.run_install_steps",
        "tenants.tasks.verify_portal",
        "messageservice.tasks.sync_sender",
        "placements.tasks.rebind_binding",
        "placements.tasks.unbind_binding",
        "placements.tasks.add_consent_fields",
        "placements.tasks.add_timeline_comment",
        "placements.tasks.send_timeline_comment",
        "oauth.confirmation.resume_parked_call",
        "records.tasks.apply_portal_jobs",
        "records.tasks.load_stage_mapping",
        "records.replies.deliver_reply",
    )},
    **{name: {"queue": "maintenance"} for name in (
        "messageservice.tasks.reconcile_all_senders",
        "messageservice.tasks.reconcile_portal_senders",
        "messageservice.tasks.reconcile_senders_chunk",
        "placements.tasks.reconcile_all_bindings",
        "placements.tasks.reconcile_portal_bindings",
        "placements.tasks.reconcile_bindings_chunk",
        "oauth.tasks.refresh_all_capabilities",
        "oauth.tasks.check_capabilities",
        "oauth.tasks.check_capabilities_chunk",
        "oauth.tasks.rollup_call_log",
        "oauth.tasks.keep_tokens_alive",
        "oauth.tasks.keep_tokens_alive_chunk",
        "oauth.tasks.expire_parked_calls",
        "oauth.tasks.redispatch_confirmed_calls",
        "oauth.tasks.prune_call_log",
        "tenants.tasks.cleanup_stale_installs",
        "placements.tasks.redispatch_timeline_comments",
        "installs.tasks.redispatch_stuck_install_runs",
        "records.tasks.redispatch_lost_jobs",
        "records.replies.redispatch_replies",
        "records.offline.poll_offline_events",
        "records.offline.poll_offline_events_chunk",
    )},
}

# --- Logging: one JSON line per event, with member_id where known; secrets are redacted ----------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "b24portal.logging.ContextFilter"},
        "redact": {"()": "b24portal.logging.RedactSecretsFilter"},
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "ts", "levelname": "level", "name": "logger"},
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["context", "redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own handlers (console when DEBUG, mail_admins, runserver's django.server) would write
        # paths unredacted: every Django record goes to the root's filtered handler instead.
        "django": {"handlers": [], "level": "NOTSET", "propagate": True},
        "django.server": {"handlers": [], "level": "NOTSET", "propagate": True},
        "django.db.backends": {"level": "INFO"},
        "urllib3": {"level": "WARNING"},
    },
}

# The environment variables this file reads, in order (for the documentation test; not a Django setting).
ENV_SETTINGS: tuple[str, ...] = tuple(env.names)
