"""URLs of the console: the shell, each app's pages, the REST API and its schema."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from console import views
from console.api_root import api_root
from deployments.api.apply import ApplyDeleteView, ApplyView
from projects.api.auth import TokenExchangeView
from projects.urls import org_urlpatterns

api_v1 = [
    path("", api_root, name="api-root"),
    path("", include("projects.api.urls")),
    path("", include("catalog.api.urls")),
    path("", include("deployments.api.urls")),
    path("", include("sharing.api.urls")),
    path("apply/", ApplyView.as_view(), name="apply"),
    path("apply/delete/", ApplyDeleteView.as_view(), name="apply-delete"),
    path("auth/token/", TokenExchangeView.as_view(), name="auth-token"),
]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("org/switch/", views.org_switch, name="org-switch"),
    path("settings/", views.settings_page, name="settings"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("projects/", include("projects.urls")),
    path("organization/", include((org_urlpatterns, "org"))),
    path("catalog/", include("catalog.urls")),
    path("", include("deployments.urls")),
    path("hub/", include("gateway.urls")),
    path("", include("sharing.urls")),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]

handler400 = "console.api.api_bad_request"
handler403 = "console.api.api_permission_denied"
handler404 = "console.api.api_not_found"
handler500 = "console.api.api_server_error"
