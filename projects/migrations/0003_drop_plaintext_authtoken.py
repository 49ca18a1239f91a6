"""Drop DRF's authtoken table: it kept REST tokens in plaintext.

REST clients now authenticate with ModelDeck API keys of the REST scope (stored as keyed
hashes, projects.keys). The old tokens stop working; create an API key of the "REST API" scope
instead. The migration records of the removed app go too, so it could be installed again.
"""

from django.db import migrations


def drop_authtoken(apps, schema_editor):
    tables = schema_editor.connection.introspection.table_names()
    with schema_editor.connection.cursor() as cursor:
        if "authtoken_token" in tables:
            cursor.execute("DROP TABLE authtoken_token")
        cursor.execute("DELETE FROM django_migrations WHERE app = 'authtoken'")


class Migration(migrations.Migration):
    dependencies = [("projects", "0002_project_namespace_and_api_key_revocation")]

    operations = [migrations.RunPython(drop_authtoken, migrations.RunPython.noop)]
