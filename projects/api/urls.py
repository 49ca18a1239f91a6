from rest_framework.routers import SimpleRouter

from projects.api.views import OrganizationViewSet, ProjectViewSet

router = SimpleRouter()
router.register("organizations", OrganizationViewSet, basename="organization")
router.register("projects", ProjectViewSet, basename="project")
urlpatterns = router.urls
