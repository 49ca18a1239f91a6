"""Governance pages; the console includes them at the root (path("", include("sharing.urls")))."""

from django.urls import path

from sharing import views

app_name = "sharing"

urlpatterns = [
    path("audit/", views.audit, name="audit"),
    path(
        "audit/history/<slug:object_type>/<str:object_id>/",
        views.object_history,
        name="object_history",
    ),
    path(
        "deployments/<int:deployment_pk>/sharing/",
        views.deployment_sharing,
        name="deployment_sharing",
    ),
    path(
        "deployments/<int:deployment_pk>/promote/",
        views.deployment_promote,
        name="deployment_promote",
    ),
    path("projects/<int:project_pk>/environments/", views.environments, name="environments"),
    path(
        "projects/<int:project_pk>/environments/new/",
        views.environment_create,
        name="environment_create",
    ),
    path("environments/<int:pk>/edit/", views.environment_edit, name="environment_edit"),
    path("environments/<int:pk>/delete/", views.environment_delete, name="environment_delete"),
    path("quotas/", views.quotas, name="quotas"),
    path("quotas/organization/", views.quota_organization, name="quota_organization"),
    path("quotas/projects/<int:project_pk>/", views.quota_project, name="quota_project"),
    path("quotas/limits/", views.quota_limits_set, name="quota_limits_organization"),
    path("quotas/limits/projects/<int:project_pk>/", views.quota_limits_set, name="quota_limits_project"),
]
