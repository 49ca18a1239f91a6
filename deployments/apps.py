from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the Celery tasks in every process (web, worker, beat): services queue them by
        # name (deployments.services.PUSH_TASK), because tasks sit above services and import them.
        from deployments import tasks  # noqa: F401 - the registration is the point
