"""Catalog pages: /catalog/..."""

from django.urls import path

from catalog import views

app_name = "catalog"

urlpatterns = [
    path("", views.index, name="index"),
    path("models/new/", views.custom_create, name="custom_create"),
    # No session: the signed, expiring token is the permission (catalog/artifacts.py).
    path("artifacts/<str:token>/", views.artifact_download, name="artifact_download"),
    path("models/<int:pk>/", views.model_detail, name="model_detail"),
    path("models/<int:pk>/edit/", views.model_edit, name="model_edit"),
    path("models/<int:pk>/delete/", views.model_delete, name="model_delete"),
    path("models/<int:pk>/refresh-tags/", views.model_refresh_tags, name="model_refresh_tags"),
    path("models/<int:pk>/nim-profiles/", views.model_set_nim_profiles, name="model_set_nim_profiles"),
    path("hub/", views.hub_search, name="hub_search"),
    path("hub/models/<path:repo_id>/", views.hub_model, name="hub_model"),
    path("ngc/", views.ngc_images, name="ngc_images"),
    path("ngc/images/<path:resource_id>/", views.ngc_image, name="ngc_image"),
    path("bundles/", views.bundle_list, name="bundles"),
    path("bundles/new/", views.bundle_create, name="bundle_create"),
    path("bundles/<int:pk>/", views.bundle_detail, name="bundle_detail"),
    path("bundles/<int:pk>/edit/", views.bundle_edit, name="bundle_edit"),
    path("bundles/<int:pk>/delete/", views.bundle_delete, name="bundle_delete"),
    path("mappings/", views.mappings_index, name="mappings_index"),
    path("projects/<int:project_pk>/mappings/", views.mappings, name="mappings"),
    path(
        "projects/<int:project_pk>/mappings/resolve/", views.mapping_resolve, name="mapping_resolve"
    ),
    path("mappings/<int:pk>/move/", views.mapping_move, name="mapping_move"),
    path("mappings/<int:pk>/delete/", views.mapping_delete, name="mapping_delete"),
]
