from rest_framework.routers import SimpleRouter

from projects.api.views import APIKeyViewSet, OrganizationViewSet, ProjectViewSet

router = SimpleRouter()
router.register("organizations", OrganizationViewSet, basename="organization")
router.register("projects", ProjectViewSet, basename="project")
router.register("keys", APIKeyViewSet, basename="api-key")
urlpatterns = router.urls
