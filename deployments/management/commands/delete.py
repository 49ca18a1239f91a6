"""`manage.py delete -f FILE.yaml`: delete what the manifests name (deployments first, pools last)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from deployments.apply import (
    ManifestError,
    delete_documents,
    load_documents,
)
from deployments.management.commands.apply import add_common_arguments, context_from, read_source


class Command(BaseCommand):
    help = "Delete the objects ModelDeck manifests name; missing ones are reported, not an error."

    def add_arguments(self, parser: CommandParser) -> None:
        add_common_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        ctx = context_from(options)
        try:
            docs = [
                doc for path in options["filename"] for doc in load_documents(read_source(path), source="stdin" if path == "-" else path)
            ]
        except ManifestError as exc:
            raise CommandError(str(exc)) from None
        errors = delete_documents(ctx, docs, dry_run=options["dry_run"], write=self.stdout.write)
        if errors:
            raise CommandError(f"{errors} document(s) could not be deleted")
