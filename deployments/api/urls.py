"""REST routes of compute pools, endpoints and model deployments (included under /api/v1/)."""

from rest_framework.routers import SimpleRouter

from deployments.api.galleries import DataSourceViewSet, ResourceTemplateViewSet
from deployments.api.views import ComputePoolViewSet, DeploymentViewSet, EndpointViewSet

router = SimpleRouter()
router.register("pools", ComputePoolViewSet, basename="pool")
router.register("endpoints", EndpointViewSet, basename="endpoint")
router.register("deployments", DeploymentViewSet, basename="deployment")
router.register("resource-templates", ResourceTemplateViewSet, basename="resource-template")
router.register("data-sources", DataSourceViewSet, basename="data-source")
urlpatterns = router.urls
