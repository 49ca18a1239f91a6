"""Permissions django-guardian can grant on a single deployment beyond Django's view/change/delete."""

from django.db import migrations

EXTRA = [
    ("deactivate_modeldeployment", "Can deactivate and activate model deployment"),
    ("share_modeldeployment", "Can share model deployment and set its access policy"),
]


def create_permissions(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    # The content type may not exist yet on a fresh database (it is made after migrate).
    ct, _ = ContentType.objects.get_or_create(app_label="deployments", model="modeldeployment")
    for codename, name in EXTRA:
        Permission.objects.get_or_create(
            content_type=ct, codename=codename, defaults={"name": name}
        )


def remove_permissions(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Permission.objects.filter(
        content_type__app_label="deployments", codename__in=[c for c, _ in EXTRA]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sharing", "0001_governance"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create_permissions, remove_permissions)]
