"""Settings of the example Django project: no database, no apps, just the webhook URL.

Run it from the repository root (``pip install 'fluxbase-receiver[django]' gunicorn``)::

    export FLUXBASE_WEBHOOK_SECRET=your-webhook-secret
    gunicorn examples.django_project.wsgi
    uvicorn examples.django_project.asgi:application    # or under an ASGI server

and point a Fluxbase webhook at ``http://<host>:8000/webhooks/fluxbase``.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-set-DJANGO_SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")
ROOT_URLCONF = "examples.django_project.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",  # the webhook view is exempt: it is signed
]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
