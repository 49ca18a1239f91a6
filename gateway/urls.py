"""Developer Hub pages: models to call, API keys, usage."""

from django.urls import path

from gateway import views

app_name = "devhub"

urlpatterns = [
    path("models/", views.models, name="models"),
    path("models/<int:pk>/playground/", views.playground, name="playground"),
    path("models/<int:pk>/playground/credential/", views.playground_credential, name="playground_credential"),
    path("keys/", views.keys, name="keys"),
    path("keys/deployments/", views.key_deployment_search, name="key_deployment_search"),
    path("keys/<int:pk>/revoke/", views.key_revoke, name="key_revoke"),
    path("budgets/", views.budgets, name="budgets"),
    path("usage/", views.usage, name="usage"),
    path("usage/organization/", views.organization_usage, name="organization_usage"),
    path("deployments/<int:pk>/usage/", views.deployment_usage, name="deployment_usage"),
]
