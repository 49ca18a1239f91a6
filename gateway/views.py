"""Developer Hub pages: models to call (with samples), API keys, and usage (mine, a deployment's, the organization's)."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlencode, urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from console import permissions
from console.forms import field_validation_response
from console.http import current_organization as _organization
from console.ids import parse_id
from console.paging import ListFilter, list_query, paginate
from deployments.models import DeploymentState, EndpointHealth, ModelDeployment
from deployments.spec import RATE_LIMIT_SCOPE_LABELS
from gateway import reports
from gateway.forms import APIKeyForm
from projects import services as project_services
from projects.keys import (
    PLAYGROUND_KEY_TTL,
    api_key_create,
    api_key_get,
    api_key_revoke,
    api_key_state,
    api_keys_for_organization,
    api_keys_for_user,
    playground_key_issue,
)
from projects.models import Membership, Organization
from sharing.selectors import shared_deployments_for_org

EMBEDDING_ENGINES = {"tei"}
MODEL_SORTS = {"name": "name", "state": "state", "project": "project__name"}
KEY_SORTS = {
    "name": "name", "created": "created_at", "last_used": "last_used_at", "expires": "expires_at",
}  # fmt: skip
KEY_SEARCH_LIMIT = 20
RECENT_SORTS = {
    "time": "created_at", "deployment": "deployment_name", "status": "status_code",
    "latency": "latency_ms", "cost": "cost",
}  # fmt: skip


def callable_deployments(user, organization: Organization) -> QuerySet[ModelDeployment]:
    """Deployments the user may call: their organization's, and those shared with it
    (sharing.selectors.shared_deployments_for_org) — the same set the gateway resolves names in."""
    if not organization.memberships.filter(user=user).exists():
        return ModelDeployment.objects.none()

    shared = shared_deployments_for_org(organization).values("pk")
    return (
        ModelDeployment.objects.filter(Q(project__organization=organization) | Q(pk__in=shared))
        .select_related("current_revision", "project__organization", "model", "pool")
        .order_by("name")
    )  # no DISTINCT: neither side of the OR joins a many-valued relation


def deployment_for_usage(user, pk: int) -> ModelDeployment:
    deployment = (
        ModelDeployment.objects.filter(pk=pk, project__organization__memberships__user=user)
        .select_related("project__organization", "current_revision")
        .first()
    )
    if deployment is None:
        raise Http404("No such deployment.")
    return deployment


def gateway_base_url() -> str:
    return settings.GATEWAY_BASE_URL.rstrip("/") + "/v1"


def samples(base_url: str, model_name: str, *, embeddings: bool) -> dict[str, str]:
    """Ready-to-copy requests; the key comes from $MODELDECK_API_KEY so it never lands in a snippet."""
    if embeddings:
        body = {"model": model_name, "input": ["The quick brown fox"]}
        path = "/embeddings"
        py_call = f'result = client.embeddings.create(\n    model="{model_name}",\n    input=["The quick brown fox"],\n)\nprint(len(result.data[0].embedding))'
        js_print = "console.log(data.data[0].embedding.length);"
    else:
        body = {"model": model_name, "messages": [{"role": "user", "content": "Hello!"}]}
        path = "/chat/completions"
        py_call = (
            f'reply = client.chat.completions.create(\n    model="{model_name}",\n'
            '    messages=[{"role": "user", "content": "Hello!"}],\n)\nprint(reply.choices[0].message.content)'
        )
        js_print = "console.log(data.choices[0].message.content);"
    pretty = json.dumps(body, indent=2)
    curl = (
        f"curl {base_url}{path} \\\n"
        '  -H "Authorization: Bearer $MODELDECK_API_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d '{json.dumps(body)}'"
    )
    python = (
        "import os\n\nfrom openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base_url}", api_key=os.environ["MODELDECK_API_KEY"])\n'
        f"{py_call}\n"
    )
    javascript = (
        f'const response = await fetch("{base_url}{path}", {{\n'
        '  method: "POST",\n'
        "  headers: {\n"
        "    Authorization: `Bearer ${process.env.MODELDECK_API_KEY}`,\n"
        '    "Content-Type": "application/json",\n'
        "  },\n"
        f"  body: JSON.stringify({pretty.replace(chr(10), chr(10) + '  ')}),\n"
        "});\n"
        "const data = await response.json();\n"
        f"{js_print}\n"
    )
    return {"curl": curl, "python": python, "javascript": javascript}


def _limit_labels(rate_limits: dict) -> list[str]:
    labels = []
    for level, title in RATE_LIMIT_SCOPE_LABELS.items():
        conf = rate_limits.get(level) or {}
        parts = []
        if conf.get("rpm") is not None:
            parts.append(f"{conf['rpm']} requests/min")
        if conf.get("tpm") is not None:
            parts.append(f"{conf['tpm']} tokens/min")
        if parts:
            labels.append(f"{title}: {', '.join(parts)}")
    return labels


@login_required
def models(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    base_url = gateway_base_url()
    listing = paginate(
        request, callable_deployments(request.user, org), sorts=MODEL_SORTS, default_sort="name",
        search=("name", "current_revision__spec__served_model_name", "project__name"),
        filters=[ListFilter("state", "State", DeploymentState.choices)], per_page=10,
    )  # fmt: skip
    rows = []
    for deployment in listing.rows:
        spec = deployment.spec()
        model_name = deployment.served_name()
        embeddings = spec.get("engine") in EMBEDDING_ENGINES
        rows.append(
            {
                "deployment": deployment,
                "shared_by": deployment.project.organization
                if deployment.project.organization_id != org.pk
                else None,
                "model_name": model_name,
                "running": deployment.state == DeploymentState.RUNNING,
                # Its endpoint failed the health check: the overflow answers, else the gateway's 503.
                "unreachable": deployment.is_external and deployment.state == DeploymentState.RUNNING
                and deployment.health == EndpointHealth.UNHEALTHY,
                "kind": "Embeddings" if embeddings else "Chat / completions",
                "samples": samples(base_url, model_name, embeddings=embeddings),
                "limits": _limit_labels(spec.get("rate_limits") or {}),
                "pricing": spec.get("pricing") or {},
            }
        )
    context = {
        "rows": rows,
        "listing": listing,
        "base_url": base_url,
        "organization": org,
        "deploy_url": dict(_links([("", "deployments:create", ())]))[""],
    }
    return render(request, "devhub/models.html", context)


def _key_rows(keys) -> list[dict]:
    now = timezone.now()
    return [
        {"key": key, "state": api_key_state(key, now), "deployments": list(key.deployments.all())}
        for key in keys
    ]


@login_required
def keys(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    editable = permissions.can(request.user, "change", org)
    admin = permissions.can(request.user, "admin", org)
    # Admins may switch to every key of the organization; members only ever see their own.
    organization_view = admin and request.GET.get("view") == "organization"
    deployments = callable_deployments(request.user, org)
    form = APIKeyForm(request.POST or None, deployments=deployments)
    created = None
    if request.method == "POST":
        if not editable:
            raise PermissionDenied("Viewers cannot create API keys.")
        partial = field_validation_response(request, form, request.path)
        if partial is not None:
            return partial
        if form.is_valid():
            data = form.cleaned_data
            try:
                key, secret = api_key_create(
                    user=request.user,
                    organization=org,
                    name=data["name"],
                    scope=data["scope"],
                    expires_at=data["expires_at"],
                    deployments=data["deployments"] or (),
                )
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                created = {"key": key, "secret": secret}
                form = APIKeyForm(deployments=deployments)
    # The playground's short-lived keys (one per visit) stay out of the list unless asked for:
    # ?playground=include, kept in the list's links like its sort and page.
    show_playground = request.GET.get("playground") == "include"

    def listed(playground: str) -> QuerySet:
        if organization_view:
            return api_keys_for_organization(request.user, org, playground=playground)
        return api_keys_for_user(request.user, org, playground=playground)

    search = ("name", "prefix", "user__username") if organization_view else ("name", "prefix")
    keys_listing = paginate(
        request, listed("include" if show_playground else "hide"), sorts=KEY_SORTS,
        default_sort="-created", search=search,
    )  # fmt: skip
    # How many of them the search matches (one COUNT): what "Show" adds or "Hide" takes away.
    playground_count = list_query(
        request, listed("only"), sorts=KEY_SORTS, default_sort="-created", search=search
    ).qs.count()
    running = deployments.filter(state=DeploymentState.RUNNING).order_by("pk").first()
    context = {
        "form": form,
        "rows": _key_rows(keys_listing.rows),
        "listing": keys_listing,
        "chosen_deployments": _chosen_deployments(form, deployments),
        "is_admin": admin,
        "organization_view": organization_view,
        "organization": org,
        "playground": {
            "count": playground_count, "shown": show_playground,
            "ttl_minutes": int(PLAYGROUND_KEY_TTL.total_seconds() // 60),
            "show_url": keys_listing.url(playground="include"), "hide_url": keys_listing.url(playground=None),
        },
        "created": created,
        "can_create": editable,
        "validate_url": request.path,
        "base_url": gateway_base_url(),
        "sample_model": (running.spec().get("served_model_name") or running.name)
        if running
        else None,
    }
    template = (
        "devhub/htmx/keys_body.html"
        if request.htmx and request.method == "POST"
        else "devhub/keys.html"
    )
    response = render(request, template, context, status=201 if created else 200)
    if created:
        # The only response that ever carries the secret: keep it out of every cache.
        response["Cache-Control"] = "no-store"
    return response


def _chosen_deployments(form: APIKeyForm, deployments) -> list[ModelDeployment]:
    """The deployments already ticked in a posted form (shown again when it has errors)."""
    if not form.is_bound:
        return []
    pks = [v for v in form.data.getlist("deployments")[:KEY_SEARCH_LIMIT * 5] if parse_id(v) is not None]
    return list(deployments.filter(pk__in=pks)) if pks else []


@login_required
def key_deployment_search(request: HttpRequest) -> HttpResponse:
    """The key form's deployment picker: up to KEY_SEARCH_LIMIT callable deployments matching q
    (name, served model name, project), instead of a checkbox per deployment in the form."""
    org = _organization(request)
    q = (request.GET.get("q") or "").strip()[:100]
    found = callable_deployments(request.user, org)
    if q:
        found = found.filter(
            Q(name__icontains=q)
            | Q(current_revision__spec__served_model_name__icontains=q)
            | Q(project__name__icontains=q)
        )
    exclude = [v for v in request.GET.getlist("deployments") if parse_id(v) is not None]
    if exclude:
        found = found.exclude(pk__in=exclude)
    return render(
        request,
        "devhub/htmx/deployment_options.html",
        {"found": list(found[:KEY_SEARCH_LIMIT]), "q": q, "limit": KEY_SEARCH_LIMIT},
    )


@login_required
@require_POST
def key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    key = api_key_get(request.user, pk)
    try:
        api_key_revoke(user=request.user, key=key, reason=request.POST.get("reason", ""))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        owner = "" if key.user_id == request.user.pk else f" of {key.user.get_username()}"
        messages.success(
            request,
            f"Key “{key.name}” ({key.prefix}…){owner} revoked; the gateway refuses it from now on.",
        )
    # Back to the list as it was shown: every key of the organization, with the playground's.
    back = {name: value for name, value in (("view", "organization"), ("playground", "include"))
            if request.POST.get(name) == value}  # fmt: skip
    return redirect(reverse("devhub:keys") + (f"?{urlencode(back)}" if back else ""))


def _links(items) -> list[tuple[str, str | None]]:
    # Other parts of the console may not have their pages yet: show the crumb unlinked then.
    out = []
    for label, name, args in items:
        try:
            out.append((label, reverse(name, args=args)))
        except NoReverseMatch:
            out.append((label, None))
    return out


def _usage_page(
    request: HttpRequest,
    whose: reports.Scope,
    *,
    title: str,
    summary: str,
    scope: str,
    filename: str,
    breadcrumbs=None,
    budgets=(),
    key_names: dict[str, str] | None = None,
) -> HttpResponse:
    """`key_names`: prefix → name of the keys the page may name, when the caller has read them
    already (else the organization's keys on the page are looked up: one query)."""
    rng = reports.range_for(request.GET.get("range"))
    now = timezone.now()
    viewer_org = _organization(request)  # the keys the page may name are this organization's
    selected = reports.in_range(whose.records(), rng, now)
    if request.GET.get("format") == "csv":
        lines = reports.csv_lines(selected)
        if isinstance(request, ASGIRequest):
            # Under ASGI Django would first read a sync iterator whole; hand it an async one.
            lines = _async_chunks(lines)
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}-{rng.key}.csv"'
        return response
    totals, series = reports.summary(whose, rng, now)
    context = {
        "title": title,
        "summary": summary,
        "scope": scope,
        "breadcrumbs": _links(breadcrumbs or []),
        "budgets": budgets,
        "range": rng,
        "ranges": reports.RANGES.values(),
        "totals": totals,
        "series": series,
        "by_deployment": paginate(
            request, None, fetch=reports.breakdown_fetch(whose, rng, now, "deployment"),
            sorts=reports.BREAKDOWN_SORTS, default_sort="-requests", prefix="dep_", per_page=10,
            tiebreak="name",
        ),
        "by_key": paginate(
            request, None, fetch=reports.breakdown_fetch(whose, rng, now, "key"),
            sorts=reports.BREAKDOWN_SORTS, default_sort="-requests", prefix="key_", per_page=10,
            tiebreak="name",
        ),
        # Unsearched, the list holds exactly the requests the totals counted: no COUNT.
        "recent": paginate(
            request, selected, sorts=RECENT_SORTS, default_sort="-time", prefix="req_",
            search=("deployment_name", "api_key_prefix", "route", reports.key_name_match(viewer_org.pk)),
            per_page=25,
            total=totals["requests"],
        ),
    }  # fmt: skip
    # Tables group and search by the recorded prefix; the page shows the key's name beside it.
    shown = {row["name"] for row in context["by_key"].rows} | {r.api_key_prefix for r in context["recent"].rows}
    if key_names is None:
        key_names = reports.key_names(viewer_org.pk, shown) if totals["requests"] else {}
    for row in context["by_key"].rows:
        row["key_name"] = key_names.get(row["name"] or "", "")
    for r in context["recent"].rows:
        r.key_name = key_names.get(r.api_key_prefix, "")
    template = "devhub/htmx/usage_body.html" if request.htmx else "devhub/usage.html"
    return render(request, template, context)


async def _async_chunks(lines: Iterator[str], lines_per_chunk: int = 1000) -> AsyncIterator[str]:
    """Pull a sync line iterator (a database cursor) a chunk at a time in one worker thread
    (thread_sensitive: the same database connection throughout)."""

    def take() -> str:
        return "".join(itertools.islice(lines, lines_per_chunk))

    while chunk := await sync_to_async(take, thread_sensitive=True)():
        yield chunk


@login_required
def usage(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    mine = list(api_keys_for_user(request.user, org).values_list("pk", "prefix", "name"))
    key_ids = tuple(pk for pk, _, _ in mine)
    budgets = reports.budget_rows(
        org, request.user, api_keys_for_user(request.user, org).filter(revoked_at__isnull=True),
        members=Membership.objects.filter(organization=org, user=request.user),
    )
    return _usage_page(
        request,
        reports.Scope(organization_id=org.pk, api_key_ids=key_ids),
        title="Usage",
        scope="keys",
        filename="usage-my-keys",
        summary="Requests, tokens, cost and latency of your API keys.",
        budgets=budgets,
        key_names={prefix: name for _, prefix, name in mine},
    )


@login_required
def deployment_usage(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = deployment_for_usage(request.user, pk)
    return _usage_page(
        request,
        reports.Scope(deployment_id=deployment.pk),
        title=f"Usage · {deployment.name}",
        scope="deployment",
        filename=f"usage-{deployment.name}",
        summary=f"Every call to {deployment.spec().get('served_model_name') or deployment.name}, from every key.",
        breadcrumbs=[
            ("Model Deployments", "deployments:list", ()),
            (deployment.name, "deployments:detail", (deployment.pk,)),
        ],
    )


@login_required
def organization_usage(request: HttpRequest) -> HttpResponse:
    org = _organization(request)
    members = Membership.objects.filter(organization=org, monthly_budget__isnull=False).select_related("user")
    budgets = reports.budget_rows(org, request.user, (), members=members)
    return _usage_page(
        request,
        reports.Scope(organization_id=org.pk),
        title=f"Usage · {org.name}",
        scope="organization",
        filename=f"usage-{org.slug}",
        summary="Every call made with this organization's keys, across its deployments.",
        budgets=budgets,
    )


# ---------------------------------------------------------------------------------------------
# Playground: chat with a deployment through the gateway, as the signed-in user
# ---------------------------------------------------------------------------------------------


def _callable_deployment(request: HttpRequest, pk: int) -> ModelDeployment:
    deployment = callable_deployments(request.user, _organization(request)).filter(pk=pk).first()
    if deployment is None:
        raise Http404("No such deployment.")
    return deployment


def _connect_src_for_gateway(policy: str, base_url: str) -> str:
    """The console's CSP, with the gateway's origin added to connect-src when it is another one:
    the playground's fetch goes there."""
    parts = urlsplit(base_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    if not policy or not parts.netloc or "connect-src" not in policy:
        return policy
    return policy.replace("connect-src 'self'", f"connect-src 'self' {origin}", 1)


@login_required
@require_safe
def playground(request: HttpRequest, pk: int) -> HttpResponse:
    """Developer Hub → a model → Playground: the page; the browser calls the gateway itself with a
    short-lived key from playground_credential (never a stored secret)."""
    org = _organization(request)
    deployment = _callable_deployment(request, pk)
    spec = deployment.spec() or {}
    base_url = gateway_base_url()
    context = {
        "d": deployment,
        "model_name": deployment.served_name(),
        "base_url": base_url,
        "embeddings": spec.get("engine") in EMBEDDING_ENGINES,
        "running": deployment.state == DeploymentState.RUNNING,
        "can_use": permissions.can(request.user, "change", org),
        "own": deployment.project.organization_id == org.pk,
        "ttl_minutes": int(PLAYGROUND_KEY_TTL.total_seconds() // 60),
        "max_tokens": min(int(spec.get("context_length") or 4096), 4096),
    }
    response = render(request, "devhub/playground.html", context)
    if settings.CONTENT_SECURITY_POLICY:
        response["Content-Security-Policy"] = _connect_src_for_gateway(
            settings.CONTENT_SECURITY_POLICY, base_url
        )
    return response


@login_required
@require_POST
def playground_credential(request: HttpRequest, pk: int) -> JsonResponse:
    """A fresh short-lived gateway key for the playground (projects.keys.playground_key_issue)."""
    org = _organization(request)
    deployment = _callable_deployment(request, pk)
    try:
        key, secret = playground_key_issue(user=request.user, organization=org, deployment=deployment)
    except PermissionDenied as exc:
        return JsonResponse({"detail": str(exc)}, status=403)
    except ValidationError as exc:
        return JsonResponse({"detail": " ".join(exc.messages)}, status=400)
    response = JsonResponse(
        {
            "api_key": secret,
            "prefix": key.prefix,
            "expires_at": key.expires_at.isoformat(),
            "base_url": gateway_base_url(),
            "model": deployment.served_name(),
        },
        status=201,
    )
    response["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------------------------------------
# Budgets: monthly spend limits of the organization, its members and keys
# ---------------------------------------------------------------------------------------------


BUDGET_PAGE_SIZE = 25


@login_required
def budgets(request: HttpRequest) -> HttpResponse:
    """Admins set the organization's and members' budgets; a key's owner (or an admin) its key's.
    The members' and keys' tables are server-side lists (prefixes member_ and key_: search, sort
    and page of each in the URL), one page of rows whatever the organization's size. A POST goes
    to the page's own URL and returns there; a refused amount is shown on its own field (400)."""
    org = _organization(request)
    admin = permissions.can(request.user, "admin", org)
    errors: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        level = request.POST.get("level", "")
        target = request.POST.get("target", "")
        try:
            project_services.budget_set(
                user=request.user, organization=org, level=level, target=target,
                amount=request.POST.get("monthly_budget", ""),
                currency=request.POST.get("budget_currency") if level == "organization" else None,
            )  # fmt: skip
        except ValidationError as exc:
            messages_by_field = exc.message_dict if hasattr(exc, "error_dict") else {"monthly_budget": exc.messages}
            errors[f"{level}:{target}"] = " ".join(m for ms in messages_by_field.values() for m in ms)
            status = 400
        else:
            if (request.POST.get("monthly_budget") or "").strip():
                org.refresh_from_db()  # the service saved its own copy
                held = reports.budgets_applying_first(request.user, org, admin=admin, level=level, target=target)
                messages.success(
                    request, "Budget saved; the gateway enforces it from the next request." + _applies_first_words(held)
                )
            else:
                messages.success(request, "Budget removed; requests are no longer held to it.")
            # Back to the same page, sort and search of both tables: the form posted to this URL.
            back = reverse("devhub:budgets")
            return redirect(f"{back}?{request.GET.urlencode()}" if request.GET else back)
    members = paginate(
        request, reports.budget_members(request.user, org, admin=admin), sorts=reports.BUDGET_MEMBER_SORTS,
        default_sort="name", search=reports.BUDGET_MEMBER_SEARCH, prefix="member_", per_page=BUDGET_PAGE_SIZE,
    )  # fmt: skip
    keys = paginate(
        request, reports.budget_keys(request.user, org, admin=admin), sorts=reports.BUDGET_KEY_SORTS,
        default_sort="owner", search=reports.BUDGET_KEY_SEARCH, prefix="key_", per_page=BUDGET_PAGE_SIZE,
    )  # fmt: skip
    members.rows = reports.budget_member_rows(org, members.rows)
    keys.rows = reports.budget_key_rows(org, keys.rows)
    organization_row = reports.budget_organization_row(org)
    for row in members.rows:
        row["error"] = errors.get(f"member:{row['user']}", "")
    for row in keys.rows:
        row["error"] = errors.get(f"key:{row['id']}", "")
    organization_row["error"] = errors.get("organization:", "")
    shown = {f"member:{row['user']}" for row in members.rows} | {f"key:{row['id']}" for row in keys.rows}
    for where, error in errors.items():
        if where not in shown | {"organization:"}:  # no row on this page to put it under
            messages.error(request, error)
    context = {"organization_row": organization_row, "members": members, "keys": keys, "is_admin": admin,
               "organization": org}  # fmt: skip
    return render(request, "devhub/budgets.html", context, status=status)


def _applies_first_words(held: list[str]) -> str:
    """After an organization's or member's budget is set: the members' and keys' own budgets it is
    now below, in words ("" when none). Theirs stay as set; this lower one applies first."""
    if not held:
        return ""
    shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
    return f" It is lower than the own budget of {shown}: this one applies first; theirs stay as set."
