from django.contrib import admin

from catalog.models import CatalogModel, MaaSMapping, ProfileBundle


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "source", "task", "parameters", "created_at"]
    list_filter = ["source", "organization"]
    search_fields = ["name", "repo_id", "ngc_image"]


@admin.register(ProfileBundle)
class ProfileBundleAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "engine", "image", "organization", "created_at"]
    list_filter = ["engine"]


@admin.register(MaaSMapping)
class MaaSMappingAdmin(admin.ModelAdmin):
    list_display = ["project", "position", "source", "task", "name_pattern", "bundle"]
    list_filter = ["project"]
