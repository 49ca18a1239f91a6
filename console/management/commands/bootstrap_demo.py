"""Create the demo organization, project and admin user; safe to run any number of times."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from projects.models import Membership, Organization, Project, ProjectMember, Role
from projects.services import project_create

DEMO_HOOKS: list[str] = [
    # Later parts of the product add their demo data here (a sandbox pool, a model ready to deploy).
    "catalog.demo.bootstrap",
    "deployments.demo.bootstrap",
]


class Command(BaseCommand):
    help = "Create the demo organization 'demo', project 'demo' and superuser 'admin' (idempotent)."

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        with transaction.atomic():
            admin, created = User.objects.get_or_create(
                username="admin", defaults={"is_staff": True, "is_superuser": True, "email": "admin@example.com"}
            )
            password = settings.MODELDECK_ADMIN_PASSWORD
            if created:
                if password:
                    admin.set_password(password)
                else:
                    admin.set_unusable_password()
                    self.stdout.write("MODELDECK_ADMIN_PASSWORD is not set: admin has no password; use createsuperuser or changepassword.")
                admin.save()
            org, _ = Organization.objects.get_or_create(slug="demo", defaults={"name": "demo", "gpu_quota": 8})
            Membership.objects.get_or_create(user=admin, organization=org, defaults={"role": Role.ADMIN})
            project = Project.objects.filter(organization=org, slug="demo").first()
            if project is None:  # through the service: it chooses the namespace and adds admin
                project = project_create(
                    user=admin, organization=org, name="demo", slug="demo",
                    description="Demo project created by make run.", gpu_quota=4,
                )  # fmt: skip
            ProjectMember.objects.get_or_create(project=project, user=admin, defaults={"role": Role.ADMIN})
        for hook in DEMO_HOOKS:
            module_name, func_name = hook.rsplit(".", 1)
            try:
                module = __import__(module_name, fromlist=[func_name])
            except ModuleNotFoundError:
                continue
            getattr(module, func_name)(organization=org, project=project, admin=admin, stdout=self.stdout)
        self.stdout.write(self.style.SUCCESS("Demo ready: organization 'demo', project 'demo', user 'admin'."))
