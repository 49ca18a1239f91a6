from django.urls import path
from rest_framework.routers import SimpleRouter

from projects.api.org import GroupViewSet, InvitationViewSet, MemberViewSet, UsageViewSet
from projects.api.views import APIKeyViewSet, BudgetView, OrganizationViewSet, ProjectViewSet

router = SimpleRouter()
router.register("organizations", OrganizationViewSet, basename="organization")
router.register("projects", ProjectViewSet, basename="project")
router.register("keys", APIKeyViewSet, basename="api-key")
router.register("members", MemberViewSet, basename="member")
router.register("invitations", InvitationViewSet, basename="invitation")
router.register("groups", GroupViewSet, basename="group")
router.register("usage", UsageViewSet, basename="usage")
urlpatterns = [*router.urls, path("budgets/", BudgetView.as_view(), name="budget-list")]
