"""`manage.py apply -f FILE.yaml`: create or update pools, bundles, models, endpoints and deployments declaratively."""

from __future__ import annotations

import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from deployments.apply import (
    Context,
    ManifestError,
    apply_documents,
    load_documents,
)
from projects.models import Organization


def read_source(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise CommandError(f"can't read {path}: {exc.strerror}") from None


def context_from(options: dict[str, Any]) -> Context:
    User = get_user_model()
    user = User.objects.filter(username=options["user"]).first()
    if user is None:
        raise CommandError(f"no user {options['user']!r}; pass --user")
    organization = Organization.objects.filter(slug=options["organization"]).first()
    if organization is None:
        raise CommandError(f"no organization {options['organization']!r}; pass --organization")
    return Context(user=user, organization=organization, dry_run=options.get("dry_run", False))


def add_common_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="YAML file (or - for stdin); repeatable.",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Print what would change (a diff) and change nothing.",
    )
    parser.add_argument(
        "--user", default="admin", help="Act as this user (permissions apply). Default: admin."
    )
    parser.add_argument("--organization", default="demo", help="Organization slug. Default: demo.")


class Command(BaseCommand):
    help = "Apply ModelDeck manifests (apiVersion modeldeck.io/v1); a second apply of the same file changes nothing."

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
        errors = apply_documents(ctx, docs, dry_run=options["dry_run"], write=self.stdout.write)
        if errors and options["dry_run"]:
            raise CommandError(f"{errors} document(s) would not be applied; nothing was changed (dry run)")
        if errors:
            raise CommandError(f"{errors} document(s) could not be applied")
