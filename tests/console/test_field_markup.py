"""Every console page's form markup holds together for a screen reader: an input's aria-describedby
names elements that exist (its help text, and its error list when refused), a label's `for` finds
its field, and no id is used twice (QA pass: Django 5.2 points inputs at `<id>_helptext` and
`<id>_error`, which hand-written help and error lists did not carry; the members page's two forms
both had `id_role`, the integrations page's three cards `id_kind`)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from catalog.models import CatalogModel
from deployments.models import ComputePool, PoolKind
from tests.conftest import login
from tests.test_crawl_scoping import PAGE_ARGS, URLCONF, World, mapping_for, routes_with_arguments

pytestmark = pytest.mark.django_db

# Pages without arguments that are not console pages (or need a network peer to render).
SKIP = {"logout", "healthz", "favicon", "api-schema", "api-docs", "org-switch"}


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.references: list[tuple[str, str, str]] = []  # (attribute, id named, the element's name)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
        who = f"<{tag} name={a.get('name')!r} id={a.get('id')!r}>"
        for attribute in ("aria-describedby", "aria-labelledby"):
            for named in (a.get(attribute) or "").split():
                self.references.append((attribute, named, who))
        if tag == "label" and a.get("for"):
            self.references.append(("label for", a["for"], who))


def markup_problems(html: str) -> list[str]:
    parser = _Markup()
    parser.feed(html)
    ids = set(parser.ids)
    problems = [f"{who} {attribute}={named!r} names no element" for attribute, named, who in parser.references
                if named not in ids]  # fmt: skip
    seen: set[str] = set()
    problems += [f"id {i!r} is used twice" for i in parser.ids if i in seen or seen.add(i)]
    return problems


def _pages_without_arguments(patterns, prefix: str = "", namespace: str | None = None):
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{namespace}:{p.namespace}" if namespace and p.namespace else (p.namespace or namespace)
            if str(p.pattern).startswith(("api/", "admin/")):
                continue
            yield from _pages_without_arguments(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern) and p.name and not p.pattern.regex.groupindex:
            name = f"{namespace}:{p.name}" if namespace else p.name
            if name not in SKIP:
                yield name


def test_every_page_names_only_elements_that_exist(tenants, settings):
    settings.ROOT_URLCONF = URLCONF
    world = World(tenants.org, tenants.project, tenants.owner)
    client = login(tenants.owner)
    urls = [reverse(name) for name in sorted(set(_pages_without_arguments(get_resolver().url_patterns)))]
    urls += [world.url(route, mapping_for(route)) for route in routes_with_arguments()
             if not route.api and route.name in PAGE_ARGS]  # fmt: skip
    problems, checked = [], 0
    for url in urls:
        response = client.get(url)
        if response.status_code != 200 or not response["Content-Type"].startswith("text/html"):
            continue
        checked += 1
        problems += [f"{url}: {p}" for p in markup_problems(response.content.decode())]
    assert checked > 40  # the crawl reached the console's pages
    assert problems == [], "\n".join(problems)


def _refused(client, url: str, data: dict, field_id: str, words: str) -> str:
    response = client.post(url, data)
    html = response.content.decode()
    assert words in html, url
    assert f'id="{field_id}_error"' in html, f"{url}: the error list of {field_id} has no id"
    assert markup_problems(html) == [], url
    return html


def test_a_refused_form_points_each_field_at_its_own_error_list(tenants):
    client = login(tenants.owner)
    html = _refused(client, reverse("projects:create"), {"name": "Research"}, "id_name", "already exists")
    field = html.split('name="name"', 1)[1].split(">", 1)[0]
    assert 'aria-describedby="id_name_helptext id_name_error"' in field or 'aria-describedby="id_name_error"' in field
    _refused(client, reverse("org:members"), {"form": "add", "username": "nobody", "role": "member"},
             "id_username", "No user you can add with that username")  # fmt: skip
    _refused(client, reverse("org:members"), {"form": "invite", "email": "not-an-email", "role": "member"},
             "id_invite_email", "Enter a valid email address")  # fmt: skip
    _refused(client, reverse("catalog:custom_create"), {"name": "mine"}, "id_storage_uri", "storage URI")
    _refused(client, reverse("sharing:environment_create", args=[tenants.project.pk]), {}, "id_name", "required")
    model = CatalogModel.objects.create(organization=tenants.org, name="m", source="huggingface", repo_id="o/m")
    ComputePool.objects.create(organization=tenants.org, name="sandbox", kind=PoolKind.SANDBOX, engine_label="vllm")
    _refused(client, reverse("deployments:create"), {"name": "Bad Name!", "project": tenants.project.pk,
             "model": model.pk}, "id_name", "lowercase letters")  # fmt: skip


def test_the_members_page_labels_find_their_own_forms_fields(tenants):
    html = login(tenants.owner).get(reverse("org:members")).content.decode()
    add, invite = html.split('id="member-add-form"', 1)[1].split('id="invite-form"', 1)
    assert 'for="id_role"' in add and 'id="id_role"' in add
    assert 'for="id_invite_role"' in invite.split("</form>")[0] and 'id="id_invite_role"' in invite.split("</form>")[0]
