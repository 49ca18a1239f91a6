"""Projects store their Kubernetes namespace (unique); API keys get a scope and a revocation reason.

Existing projects keep the namespace they had (`<organization slug>-<project slug>`, what
Project.namespace() computed before). Where two projects already computed the same string
(organization `demo` + project `x-y` and organization `demo-x` + project `y`), the older one
keeps it and the newer one moves to `md-<organization id>-<project slug>`: its objects are
pushed there on the next change, and the reconciler removes what it left in the shared one.
"""

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

NAMESPACE_VALIDATOR = django.core.validators.RegexValidator(
    "^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "A namespace is a DNS-1123 label: at most 63 lowercase letters, digits and dashes.",
)


def copy_current_namespaces(apps, schema_editor):
    Project = apps.get_model("projects", "Project")
    taken: set[str] = set()
    for project in Project.objects.select_related("organization").order_by("pk"):
        namespace = f"{project.organization.slug}-{project.slug}"
        if namespace in taken:
            namespace = f"md-{project.organization_id}-{project.slug}"
        taken.add(namespace)
        Project.objects.filter(pk=project.pk).update(kube_namespace=namespace)


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="revoked_by",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                related_name="+", to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="apikey",
            name="revoked_reason",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="apikey",
            name="scope",
            field=models.CharField(
                choices=[("gateway", "Gateway: call models"), ("rest", "REST API: manage ModelDeck as you")],
                default="gateway",
                help_text="Gateway keys call models; REST API keys act as their owner on /api/v1/.",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="kube_namespace",
            field=models.CharField(max_length=63, null=True, editable=False),
        ),
        migrations.RunPython(copy_current_namespaces, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="project",
            name="kube_namespace",
            field=models.CharField(
                editable=False,
                help_text="The Kubernetes namespace of this project on every compute pool.",
                max_length=63,
                unique=True,
                validators=[NAMESPACE_VALIDATOR],
            ),
        ),
        migrations.AddConstraint(
            model_name="project",
            constraint=models.CheckConstraint(
                condition=models.Q(("kube_namespace", ""), _negated=True), name="project_namespace_not_empty"
            ),
        ),
    ]
