from django.urls import path

from projects import views

app_name = "projects"

urlpatterns = [
    path("", views.project_list, name="list"),
    path("new/", views.project_create, name="create"),
    path("<int:pk>/", views.project_detail, name="detail"),
    path("<int:pk>/edit/", views.project_edit, name="edit"),
    path("<int:pk>/delete/", views.project_delete, name="delete"),
    path("<int:pk>/integrations/", views.project_integrations, name="integrations"),
    path("<int:pk>/integrations/<str:kind>/check/", views.integration_check, name="integration_check"),
    path("<int:pk>/integrations/<str:kind>/delete/", views.integration_delete, name="integration_delete"),
]
