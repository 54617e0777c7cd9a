"""Single-file settings of the Django sample app for `tlsfront doctor` tests.

Environment:
    FIXED=0|1       0: Django's defaults, i.e. what breaks behind a TLS proxy
                    (absolute URLs and redirects say http://, cookies lack
                    Secure); 1: the settings a Django app needs behind tlsfront
    PUBLIC_PORT     the port clients use (for CSRF_TRUSTED_ORIGINS), 8443

No database: sessions live in signed cookies, so nothing needs migrating.
"""

import os


def env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


FIXED = env_flag("FIXED")
PUBLIC_PORT = int(os.environ.get("PUBLIC_PORT", "8443"))

SECRET_KEY = os.environ.get("SECRET_KEY", "doctor-test-insecure-secret-key-0123456789abcdef")
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

ROOT_URLCONF = "doctor_site.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
DATABASES: dict = {}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": False,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
USE_TZ = True
WSGI_APPLICATION = None

if FIXED:
    # Trust tlsfront's X-Forwarded-Proto / -Host / -Port (and only with
    # ALLOWED_HOSTS above, so a forged X-Forwarded-Host gets 400).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
    USE_X_FORWARDED_PORT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    CSRF_TRUSTED_ORIGINS = [f"https://localhost:{PUBLIC_PORT}"]
