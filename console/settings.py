"""Django settings for ModelDeck, read from the environment through strict helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from console.env import (
    EnvError,
    database_from_url,
    env_bool,
    env_int,
    env_list,
    env_str,
    redis_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# Every asset is vendored and served by ModelDeck itself: nothing loads from another origin.
# 'unsafe-inline' remains for the few inline <script>/<style> blocks and style attributes of the
# templates (no eval: htmx runs without it).
DEFAULT_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)

try:
    REDIS_URL = redis_url("REDIS_URL", env_str("REDIS_URL"))
    DATABASES = {
        "default": database_from_url(
            "DATABASE_URL", env_str("DATABASE_URL", "sqlite:///modeldeck.sqlite3")
        )
    }
    # Embedded mode: no external services at all (SQLite, filesystem Celery transport).
    EMBEDDED = REDIS_URL is None
    # Off in every mode, the embedded demo too: Django's technical pages list the URL patterns
    # and show tracebacks. DEBUG=1 turns them on while developing.
    DEBUG = env_bool("DEBUG", False)
    SECRET_KEY = env_str("SECRET_KEY")
    if SECRET_KEY is None:
        if not EMBEDDED:
            raise EnvError("SECRET_KEY must be set when REDIS_URL is set (production mode).")
        SECRET_KEY = "modeldeck-embedded-insecure-key-change-me"
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
    MODELDECK_PORT = env_int("MODELDECK_PORT", 8000, minimum=1, maximum=65535)
    MODELDECK_ADMIN_PASSWORD = env_str("MODELDECK_ADMIN_PASSWORD", "admin" if EMBEDDED else None)
    MODELDECK_DATA_DIR = Path(env_str("MODELDECK_DATA_DIR", str(BASE_DIR / "var")))
    # Key for secrets at rest (tokens, kubeconfigs); derived from SECRET_KEY unless given.
    MODELDECK_ENCRYPTION_KEY = env_str("MODELDECK_ENCRYPTION_KEY")
    HF_ENDPOINT = env_str("MODELDECK_HF_ENDPOINT", "https://huggingface.co")
    NGC_API_URL = env_str("MODELDECK_NGC_API_URL", "https://api.ngc.nvidia.com")
    HUB_TIMEOUT_SECONDS = env_int("MODELDECK_HUB_TIMEOUT", 10, minimum=1, maximum=300)
    # `make run`'s helper servers listen next to the console, so two instances on one machine
    # (different MODELDECK_PORT) don't collide: offline Hub +92, Kubernetes API +93, engine +94,
    # offline NGC +95 (8092–8095 for the default 8000). run_console picks free ports for any
    # of them that is taken, and hands the URLs to its processes.
    HELPER_PORTS = {
        name: (MODELDECK_PORT + offset if MODELDECK_PORT + offset <= 65535 else MODELDECK_PORT - 100 + offset)
        for name, offset in (("hub", 92), ("kube", 93), ("engine", 94), ("ngc", 95))
    }
    SANDBOX_KUBE_URL = env_str("MODELDECK_SANDBOX_KUBE_URL", f"http://127.0.0.1:{HELPER_PORTS['kube']}")
    SANDBOX_ENGINE_URL = env_str("MODELDECK_SANDBOX_ENGINE_URL", f"http://127.0.0.1:{HELPER_PORTS['engine']}")
    # Compute pools (README "Who may register compute pools"): sandbox pools only in the embedded
    # mode and only at the sandbox ModelDeck started; organization admins bring their own cluster
    # only when this is on.
    SANDBOX_POOLS_ENABLED = EMBEDDED
    SANDBOX_KUBE_URLS = [SANDBOX_KUBE_URL]
    ORG_ADMINS_MAY_ADD_POOLS = env_bool("MODELDECK_ORG_ADMINS_MAY_ADD_POOLS", False)
    # External deployments (deployments/external.py) may point at loopback / private addresses
    # only when the operator allows it (an on-prem network the gateway can reach; tests).
    EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = env_bool("MODELDECK_EXTERNAL_PRIVATE_ADDRESSES", False)
    GATEWAY_BASE_URL = env_str("MODELDECK_GATEWAY_URL", f"http://127.0.0.1:{MODELDECK_PORT}")
    # Where pods fetch uploaded artifacts (TorchServe's .mar) from, and how long a signed link lasts.
    ARTIFACT_BASE_URL = env_str("MODELDECK_ARTIFACT_BASE_URL", GATEWAY_BASE_URL)
    ARTIFACT_URL_TTL = env_int("MODELDECK_ARTIFACT_URL_TTL", 900, minimum=30, maximum=86_400)
    # The namespace ModelDeck's gateway runs in on its own cluster: engines' NetworkPolicies admit it.
    MODELDECK_NAMESPACE = env_str("MODELDECK_NAMESPACE", "modeldeck")
    # Prometheus scrapes /metrics with this bearer token; unset, /metrics answers 404.
    METRICS_TOKEN = env_str("MODELDECK_METRICS_TOKEN")
    # Organization invitations (projects.services.invitation_create): the link's lifetime, and
    # mail through SMTP when MODELDECK_EMAIL_HOST is set (else printed to the log; the admin
    # also sees the link once). MODELDECK_PUBLIC_URL builds absolute links outside a request.
    INVITATION_DAYS = env_int("MODELDECK_INVITATION_DAYS", 7, minimum=1, maximum=90)
    PUBLIC_URL = env_str("MODELDECK_PUBLIC_URL", f"http://127.0.0.1:{MODELDECK_PORT}")
    EMAIL_HOST = env_str("MODELDECK_EMAIL_HOST", "")
    EMAIL_PORT = env_int("MODELDECK_EMAIL_PORT", 587, minimum=1, maximum=65535)
    EMAIL_HOST_USER = env_str("MODELDECK_EMAIL_USER", "")
    EMAIL_HOST_PASSWORD = env_str("MODELDECK_EMAIL_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("MODELDECK_EMAIL_TLS", True)
    DEFAULT_FROM_EMAIL = env_str("MODELDECK_EMAIL_FROM", "ModelDeck <modeldeck@localhost>")
    EMAIL_BACKEND = (
        "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST
        else "django.core.mail.backends.console.EmailBackend"
    )
    # Bytes of uploaded custom-model artifacts one organization may keep (catalog uploads).
    UPLOAD_QUOTA_BYTES = (
        env_int("MODELDECK_UPLOAD_QUOTA_MB", 100 * 1024, minimum=0, maximum=10**9) * 1024 * 1024
    )

    # Transport security: on by default outside the embedded mode (which serves plain HTTP on
    # a laptop); each can be turned off where a proxy in front already does it.
    SECURE_DEFAULT = not EMBEDDED
    SECURE_SSL_REDIRECT = env_bool("MODELDECK_SSL_REDIRECT", SECURE_DEFAULT)
    # Behind a TLS-terminating proxy: trust its X-Forwarded-Proto (only if it always sets it).
    if env_bool("MODELDECK_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int(
        "MODELDECK_HSTS_SECONDS", 31_536_000 if SECURE_DEFAULT else 0, minimum=0
    )
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("MODELDECK_HSTS_INCLUDE_SUBDOMAINS", SECURE_DEFAULT)
    SECURE_HSTS_PRELOAD = env_bool("MODELDECK_HSTS_PRELOAD", False)
    SESSION_COOKIE_SECURE = env_bool("MODELDECK_SECURE_COOKIES", SECURE_DEFAULT)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    CONTENT_SECURITY_POLICY = env_str("MODELDECK_CSP", DEFAULT_CSP if SECURE_DEFAULT else "off")
    if CONTENT_SECURITY_POLICY.strip().lower() in {"off", "none", "false"}:
        CONTENT_SECURITY_POLICY = ""
except EnvError as exc:  # pragma: no cover - exercised by starting with a bad value
    sys.stderr.write(f"ModelDeck configuration error: {exc}\n")
    raise SystemExit(2) from exc

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_celery_beat",
    "guardian",
    "console",
    "projects",
    "catalog",
    "deployments",
    "sharing",
    "gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "console.security.ContentSecurityPolicyMiddleware",
    "console.middleware.StaticFilesMiddleware",  # WhiteNoise, async-friendly under ASGI
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "console.api.RejectNulBytesMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "sharing.audit.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "console.middleware.CurrentOrganizationMiddleware",
]

ROOT_URLCONF = "console.urls"
ASGI_APPLICATION = "console.asgi.application"
WSGI_APPLICATION = "console.wsgi.application"

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
                "console.context_processors.console",
            ],
        },
    }
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 5},
    },
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = MODELDECK_DATA_DIR / "staticfiles"
# Serve straight from the finders: no collectstatic step needed to run.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_AUTOREFRESH = DEBUG

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Hashed ModelDeck API keys (REST scope), not DRF's plaintext authtoken table. First, so
        # a bad or missing key is a 401 with WWW-Authenticate rather than a 403.
        "projects.api.authentication.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Every operation also declares the errors it can answer (console/api_schema.py).
    "DEFAULT_SCHEMA_CLASS": "console.api_schema.ModelDeckAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "console.api_defaults.LimitOffsetPagination",
    "DEFAULT_METADATA_CLASS": "console.api_defaults.RequestBodyMetadata",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "console.api.exception_handler",
    # JSON bodies must be objects (console.api_parsers); forms and multipart as DRF's.
    "DEFAULT_PARSER_CLASSES": [
        "console.api_parsers.JSONObjectParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ModelDeck API",
    "DESCRIPTION": "Deploy AI/ML models onto Kubernetes GPU clusters and serve them behind API keys.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the vendored sidecar package: no CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "IntegrationKindEnum": "projects.models.IntegrationKind",
        "PoolKindEnum": "deployments.models.PoolKind",
    },
}

# Every Redis client (the gateway's, Django's cache, Celery's broker): a pooled connection idle
# for longer than health_check_interval is PINGed before use, reads time out, dead peers are found
# by TCP keepalive (gateway/cache.py redis_options adds the one retry on a dropped connection).
REDIS_CLIENT_OPTIONS = {
    "health_check_interval": 10,
    "socket_timeout": 5.0,
    "socket_connect_timeout": 2.0,
    "socket_keepalive": True,
}

# Celery: Redis in production; kombu's filesystem transport when embedded, which (unlike
# memory://) works between the web process, the worker and beat.
CELERY_DIR = MODELDECK_DATA_DIR / "celery"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # The gateway's Redis client options (REDIS_CLIENT_OPTIONS) and a retried timed-out read;
    # no socket_timeout: kombu blocks on BRPOP with its own.
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
        **{k: v for k, v in REDIS_CLIENT_OPTIONS.items() if k != "socket_timeout"},
        "retry_on_timeout": True,
    }
    CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
else:
    for sub in ("out", "processed", "control"):
        (CELERY_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    # kombu's filesystem transport with whole-file messages (console/broker.py: a worker once
    # read a message still being written and stopped).
    CELERY_BROKER_TRANSPORT = "console.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_DIR / "out"),
        "data_folder_out": str(CELERY_DIR / "out"),
        "processed_folder": str(CELERY_DIR / "processed"),
        "control_folder": str(CELERY_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Passed to redis-py's pool: the same resilience as the gateway's clients.
            "OPTIONS": {**REDIS_CLIENT_OPTIONS, "retry_on_timeout": True},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"refusal_without_traceback": {"()": "console.log_filters.RefusalWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Logger filters run before any handler (caplog's too): a 403 is one line, no traceback.
        "django.request": {"filters": ["refusal_without_traceback"]},
    },
}

# Load balancers and kubelet probes call /healthz over plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
if not SECURE_HSTS_PRELOAD:
    # Preloading is an opt-in submission to the browsers' lists (MODELDECK_HSTS_PRELOAD), never
    # a default; `check --deploy` would otherwise warn about it in every correct setup.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the body's hx-headers, not the cookie
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Periodic work, installed into django-celery-beat's tables when beat starts.
CELERY_BEAT_SCHEDULE: dict = {
    "console-health-ping": {"task": "console.health_ping", "schedule": 30.0},
    # Flow 3: one list call per kind per pool, then every deployment's state.
    "deployments-sync-status": {"task": "deployments.sync_status", "schedule": 5.0},
    # Changes committed while the broker was down ("waiting to be pushed").
    "deployments-push-waiting": {"task": "deployments.push_waiting", "schedule": 10.0},
    # Flow 4: usage buffered in Redis by the gateway, written to the database in batches.
    "gateway-flush-usage": {"task": "gateway.flush_usage", "schedule": 5.0},
    # Usage records into the hourly rollups the usage pages read (gateway/rollup.py).
    "gateway-fold-usage": {"task": "gateway.fold_usage", "schedule": 10.0},
    # Signed artifact links in the pods' Secrets renewed well before they expire (TorchServe).
    "deployments-refresh-artifact-links": {
        "task": "deployments.refresh_artifact_links", "schedule": max(10.0, ARTIFACT_URL_TTL / 3),
    },  # fmt: skip
    # External deployments: health check → the breaker every gateway shares (gateway/overflow.py).
    "gateway-check-external": {"task": "gateway.check_external_endpoints", "schedule": 15.0},
}
# Flow 6: the autoscaler (deployments/autoscale.py) reads the gateway's load over the last
# MODELDECK_AUTOSCALE_WINDOW_SECONDS every MODELDECK_AUTOSCALE_TICK_SECONDS; the gateway holds at
# most MODELDECK_GATEWAY_HOLD_QUEUE requests per deployment (per process) while one starts.
MODELDECK_AUTOSCALE_TICK_SECONDS = env_int("MODELDECK_AUTOSCALE_TICK_SECONDS", 2, minimum=1, maximum=60)
MODELDECK_AUTOSCALE_WINDOW_SECONDS = env_int("MODELDECK_AUTOSCALE_WINDOW_SECONDS", 10, minimum=2, maximum=120)
MODELDECK_GATEWAY_HOLD_QUEUE = env_int("MODELDECK_GATEWAY_HOLD_QUEUE", 100, minimum=0, maximum=100_000)
# Browser apps on these origins may call the gateway (CORS; comma-separated, "*" any, empty none).
# Keys travel in the Authorization header, never a cookie, so "*" lends a page no credential it
# doesn't hold: as the OpenAI API and the LiteLLM proxy answer.
MODELDECK_GATEWAY_CORS_ORIGINS = env_list("MODELDECK_GATEWAY_CORS_ORIGINS", ["*"])
CELERY_BEAT_SCHEDULE["deployments-autoscale"] = {
    "task": "deployments.autoscale", "schedule": float(MODELDECK_AUTOSCALE_TICK_SECONDS),
}
if not REDIS_URL:
    # The filesystem transport polls; keep the wait between polls short so work starts quickly.
    CELERY_BROKER_TRANSPORT_OPTIONS["polling_interval"] = 0.5
