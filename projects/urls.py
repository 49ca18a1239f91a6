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
    path("<int:pk>/members/add/", views.project_member_add, name="member_add"),
    path("<int:pk>/members/<int:user_pk>/remove/", views.project_member_remove, name="member_remove"),
]

# Organization settings (members, invitations, groups): included as namespace ``org``.
org_urlpatterns = [
    path("members/", views.org_members, name="members"),
    path("members/<int:pk>/role/", views.org_member_role, name="member_role"),
    path("members/<int:pk>/remove/", views.org_member_remove, name="member_remove"),
    path("invitations/<int:pk>/revoke/", views.org_invitation_revoke, name="invitation_revoke"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("groups/", views.org_groups, name="groups"),
    path("groups/<int:pk>/", views.org_group_detail, name="group_detail"),
    path("groups/<int:pk>/delete/", views.org_group_delete, name="group_delete"),
    path("groups/<int:pk>/members/add/", views.org_group_member_add, name="group_member_add"),
    path("groups/<int:pk>/members/<int:user_pk>/remove/", views.org_group_member_remove, name="group_member_remove"),
]
