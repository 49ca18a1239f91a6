"""The built-in `nim-llm` bundle no longer carries variables for settings ModelDeck owns.

Its `enable_kv_cache_reuse` and `max_model_len` variables rendered NIM_ENABLE_KV_CACHE_REUSE and
NIM_MAX_MODEL_LEN, which the deployment's own prompt caching and context length set: every NIM
deployment through the bundle was refused ("NIM_ENABLE_KV_CACHE_REUSE is set by ModelDeck").
"""

from django.db import migrations

OWNED_VARIABLES = ("enable_kv_cache_reuse", "max_model_len")


def drop_owned_variables(apps, schema_editor):
    ProfileBundle = apps.get_model("catalog", "ProfileBundle")
    for bundle in ProfileBundle.objects.filter(organization=None, name="nim-llm"):
        kept = [v for v in bundle.variables or [] if v.get("name") not in OWNED_VARIABLES]
        if kept != (bundle.variables or []):
            bundle.variables = kept
            bundle.save(update_fields=["variables"])


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0004_builtin_profile_bundles"),
    ]

    operations = [migrations.RunPython(drop_owned_variables, migrations.RunPython.noop)]
