# ModelDeck's image: the console, REST API and gateway (uvicorn console.asgi:application), the
# Celery worker and beat, and `manage.py` — one image, the command picks the role
# (deploy/kubernetes/ runs each). Runtime dependencies only; no development extras, no sandbox.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=console.settings \
    MODELDECK_DATA_DIR=/var/lib/modeldeck

WORKDIR /app

# Dependencies first (a layer that changes only with pyproject.toml), with the CLI package.
COPY pyproject.toml README.md ./
COPY modeldeck_cli/ modeldeck_cli/
RUN pip install . && rm -rf build modeldeck.egg-info

COPY manage.py ./
COPY console/ console/
COPY projects/ projects/
COPY catalog/ catalog/
COPY deployments/ deployments/
COPY gateway/ gateway/
COPY sharing/ sharing/
COPY templates/ templates/
COPY static/ static/

# Static files are served by WhiteNoise from the image (MODELDECK_DATA_DIR/staticfiles);
# uploaded artifacts go to a volume at MODELDECK_DATA_DIR/artifacts.
RUN python manage.py collectstatic --noinput \
 && groupadd --gid 10001 modeldeck \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin modeldeck \
 && mkdir -p /var/lib/modeldeck/artifacts \
 && chown -R 10001:10001 /var/lib/modeldeck/artifacts

USER 10001:10001
EXPOSE 8000
CMD ["python", "-m", "uvicorn", "console.asgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--proxy-headers", "--forwarded-allow-ips", "*", "--lifespan", "off"]
