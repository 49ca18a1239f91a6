"""URLs of the deployments pages: compute pools, endpoints and model deployments."""

from django.urls import path

from deployments import views

app_name = "deployments"

urlpatterns = [
    path("deployments/", views.deployment_list, name="list"),
    path("deployments/new/", views.deployment_create, name="create"),
    path("deployments/<int:pk>/", views.deployment_detail, name="detail"),
    path("deployments/external/new/", views.external_create, name="external_create"),
    path("deployments/<int:pk>/external/", views.external_edit, name="external_edit"),
    path("deployments/<int:pk>/edit/", views.deployment_update, name="deployment_update"),
    path("deployments/<int:pk>/scale/", views.deployment_scale, name="deployment_scale"),
    path(
        "deployments/<int:pk>/deactivate/",
        views.deployment_deactivate,
        name="deployment_deactivate",
    ),
    path("deployments/<int:pk>/activate/", views.deployment_activate, name="deployment_activate"),
    path("deployments/<int:pk>/retry/", views.deployment_retry, name="deployment_retry"),
    path("deployments/<int:pk>/rollback/", views.deployment_rollback, name="deployment_rollback"),
    path("deployments/<int:pk>/nim-tag/", views.deployment_nim_tag, name="deployment_nim_tag"),
    path("deployments/<int:pk>/bundle/", views.deployment_bundle, name="deployment_bundle"),
    path("deployments/<int:pk>/delete/", views.deployment_delete, name="deployment_delete"),
    path("endpoints/", views.endpoint_list, name="endpoints"),
    path("galleries/<slug:gallery>/", views.gallery_list, name="gallery"),
    path("galleries/<slug:gallery>/<int:pk>/delete/", views.gallery_delete, name="gallery_delete"),
    path("endpoints/<int:pk>/delete/", views.endpoint_delete, name="endpoint_delete"),
    path("pools/", views.pool_list, name="pools"),
    path("pools/new/", views.pool_create, name="pool_create"),
    path("pools/<int:pk>/", views.pool_detail, name="pool_detail"),
    path("pools/<int:pk>/edit/", views.pool_edit, name="pool_edit"),
    path("pools/<int:pk>/delete/", views.pool_delete, name="pool_delete"),
    path("pools/<int:pk>/test/", views.pool_test, name="pool_test"),
]
