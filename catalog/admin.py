from django.contrib import admin

from catalog.models import CatalogModel, MaaSMapping, ProfileBundle
from console.admin import RestrictedAdmin


@admin.register(CatalogModel)
class CatalogModelAdmin(RestrictedAdmin):
    list_display = ["name", "organization", "source", "task", "parameters", "created_at"]
    list_filter = ["source", "organization"]
    search_fields = ["name", "repo_id", "ngc_image"]


@admin.register(ProfileBundle)
class ProfileBundleAdmin(RestrictedAdmin):
    list_display = ["name", "version", "engine", "image", "organization", "created_at"]
    list_filter = ["engine"]


@admin.register(MaaSMapping)
class MaaSMappingAdmin(RestrictedAdmin):
    list_display = ["project", "position", "source", "task", "name_pattern", "bundle"]
    list_filter = ["project"]
