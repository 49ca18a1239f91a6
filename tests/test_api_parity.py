"""Every console page has a REST counterpart that does the same through the same service.

``CONSOLE_TO_API`` maps each console page (URL name) to the REST route name(s) doing the same
thing; ``NO_API`` lists the pages that have none, each with its reason. A console page in
neither FAILS ``test_every_console_page_has_an_api_counterpart`` by name — a new page can't ship
without its API route or a stated reason (like tests/test_crawl_scoping.py does for scoping).
"""

from __future__ import annotations

from django.urls import get_resolver

from tests.test_crawl_scoping import URLCONF, _walk

CONSOLE_TO_API: dict[str, list[str]] = {
    # Projects, members, integrations
    "projects:list": ["project-list"],
    "projects:create": ["project-list"],
    "projects:detail": ["project-detail", "project-members"],
    "projects:edit": ["project-detail"],
    "projects:delete": ["project-detail"],
    "projects:integrations": ["project-integrations"],
    "projects:integration_check": ["project-integration-check"],
    "projects:integration_delete": ["project-integration"],
    "projects:member_add": ["project-members"],
    "projects:member_remove": ["project-member"],
    # Organization settings
    "settings": ["organization-detail", "organization-set-quota", "project-integrations"],
    "org:members": ["member-list", "invitation-list"],
    "org:member_role": ["member-detail"],
    "org:member_remove": ["member-detail"],
    "org:invitation_revoke": ["invitation-detail"],
    "org:invitation_accept": ["invitation-accept"],
    "org:groups": ["group-list"],
    "org:group_detail": ["group-detail"],
    "org:group_delete": ["group-detail"],
    "org:group_member_add": ["group-members"],
    "org:group_member_remove": ["group-member"],
    "sharing:quotas": ["project-list", "organization-list"],
    "sharing:quota_organization": ["organization-set-quota"],
    "sharing:quota_project": ["project-detail"],
    "sharing:quota_limits_organization": ["organization-limits"],
    "sharing:quota_limits_project": ["project-limits"],
    "sharing:audit": ["audit-entry-list"],
    "sharing:object_history": ["audit-entry-list"],
    # Catalog
    "catalog:index": ["catalog-model-list"],
    "deployments:external_create": ["deployment-list"],
    "deployments:external_edit": ["deployment-detail"],
    "deployments:gallery": ["resource-template-list", "data-source-list"],
    "deployments:gallery_delete": ["resource-template-detail", "data-source-detail"],
    "catalog:custom_create": ["catalog-model-list"],
    "catalog:model_detail": ["catalog-model-detail", "catalog-model-estimate", "catalog-model-bundle"],
    "catalog:model_edit": ["catalog-model-detail"],
    "catalog:model_delete": ["catalog-model-detail"],
    "catalog:model_refresh_tags": ["ngc-tags"],
    "catalog:model_set_nim_profiles": ["catalog-model-nim-profiles"],
    "catalog:hub_search": ["catalog-model-hub-search"],
    "catalog:hub_model": ["catalog-model-hub-detail", "catalog-model-hub-add"],
    "catalog:ngc_images": ["ngc-images"],
    "catalog:ngc_image": ["ngc-tags", "catalog-model-list"],
    "catalog:bundles": ["bundle-list"],
    "catalog:bundle_create": ["bundle-list"],
    "catalog:bundle_detail": ["bundle-detail", "bundle-versions"],
    "catalog:bundle_edit": ["bundle-detail"],
    "catalog:bundle_delete": ["bundle-detail"],
    "catalog:mappings_index": ["maas-mapping-list"],
    "catalog:mappings": ["maas-mapping-list"],
    "catalog:mapping_resolve": ["maas-mapping-resolve"],
    "catalog:mapping_move": ["maas-mapping-reorder"],
    "catalog:mapping_delete": ["maas-mapping-detail"],
    # Deployments, endpoints, pools
    "deployments:list": ["deployment-list"],
    "deployments:create": ["deployment-list", "apply"],
    "deployments:detail": [
        "deployment-detail", "deployment-events", "deployment-revisions", "deployment-manifests",
        "deployment-replicas", "deployment-logs", "deployment-metrics",
    ],
    "deployments:deployment_update": ["deployment-detail", "apply"],
    "deployments:deployment_scale": ["deployment-scale"],
    "deployments:deployment_deactivate": ["deployment-deactivate"],
    "deployments:deployment_activate": ["deployment-activate"],
    "deployments:deployment_retry": ["deployment-retry"],
    "deployments:deployment_rollback": ["deployment-rollback"],
    "deployments:deployment_nim_tag": ["deployment-nim-tag"],
    "deployments:deployment_bundle": ["deployment-bundle"],
    "deployments:deployment_delete": ["deployment-detail", "apply-delete"],
    "deployments:endpoints": ["endpoint-list"],
    "deployments:endpoint_delete": ["endpoint-detail"],
    "deployments:pools": ["pool-list"],
    "deployments:pool_create": ["pool-list"],
    "deployments:pool_detail": ["pool-detail"],
    "deployments:pool_edit": ["pool-detail"],
    "deployments:pool_delete": ["pool-detail"],
    "deployments:pool_test": ["pool-test"],
    "sharing:deployment_sharing": ["deployment-sharing-detail"],
    "sharing:deployment_promote": ["promotion-list"],
    "sharing:environments": ["environment-list"],
    "sharing:environment_create": ["environment-list"],
    "sharing:environment_edit": ["environment-detail"],
    "sharing:environment_delete": ["environment-detail"],
    # Developer Hub
    "devhub:models": ["deployment-list", "shared-deployment-list"],
    "devhub:keys": ["api-key-list"],
    "devhub:key_revoke": ["api-key-revoke"],
    "devhub:budgets": ["budget-list"],
    "devhub:usage": ["usage-list", "usage-summary"],
    "devhub:organization_usage": ["usage-list", "usage-summary"],
    "devhub:deployment_usage": ["usage-list", "usage-summary"],
    "devhub:playground_credential": ["deployment-playground-key"],
}

NO_API: dict[str, str] = {
    "catalog:artifact_download": "not a console page: the signed, expiring link a TorchServe pod fetches its archive from",
    "dashboard": "a summary of lists each of which has its REST route",
    "login": "browser sign-in; REST clients exchange a password for a key at POST /api/v1/auth/token/",
    "logout": "ends a browser session; REST keys are revoked at /api/v1/keys/{id}/revoke/",
    "org-switch": "the browser's current organization; REST calls name it (`organization`) or use the key's",
    "healthz": "a probe for load balancers and kubelets, not a capability",
    "favicon": "a redirect to the console's icon for browsers that ask for /favicon.ico, not a capability",
    "devhub:key_deployment_search": "a typeahead of the key form; REST lists deployments at /api/v1/deployments/",
    "devhub:playground": "the playground's API is the gateway's OpenAI API itself (/v1/chat/completions)",
}

# Names another branch may add before it lands (allowed to be missing until then). Empty: the
# logs, replicas, metrics and playground routes of issue 15 have landed.
ELSEWHERE: set[str] = set()


def _routes():
    return list(_walk(get_resolver(URLCONF).url_patterns))


def console_pages() -> set[str]:
    return {
        r.name for r in _routes()
        if r.name and not r.api and not r.name.startswith("admin:") and not r.route.startswith("admin/")
    }  # fmt: skip


def api_names() -> set[str]:
    return {r.name for r in _routes() if r.name and r.api}


def test_every_console_page_has_an_api_counterpart():
    missing = sorted(console_pages() - set(CONSOLE_TO_API) - set(NO_API))
    assert missing == [], (
        "These console pages have no REST counterpart in tests/test_api_parity.py: add the route "
        "to CONSOLE_TO_API, or the page to NO_API with the reason:\n" + "\n".join(missing)
    )


def test_every_mapped_api_route_exists():
    known = api_names()
    absent = sorted(
        f"{page} → {name}"
        for page, names in CONSOLE_TO_API.items()
        for name in names
        if name not in known and name not in ELSEWHERE
    )
    assert absent == [], "CONSOLE_TO_API names REST routes that don't exist:\n" + "\n".join(absent)


def test_the_mapping_has_no_stale_pages():
    pages = console_pages()
    stale = sorted(p for p in [*CONSOLE_TO_API, *NO_API] if p not in pages and p not in ELSEWHERE)
    assert stale == [], "Pages in the mapping that no longer exist:\n" + "\n".join(stale)
    assert not set(CONSOLE_TO_API) & set(NO_API)


def test_the_parity_check_can_fail():
    """A page without a mapping is reported (the check is not vacuous)."""
    assert "projects:list" in console_pages() and "usage-list" in api_names()
    assert console_pages() - {p for p in CONSOLE_TO_API if p != "projects:list"} - set(NO_API) == {"projects:list"}
