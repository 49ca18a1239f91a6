from rest_framework.routers import SimpleRouter

from sharing.api.views import (
    AuditEntryViewSet,
    DeploymentSharingViewSet,
    EnvironmentViewSet,
    PromotionViewSet,
    SharedDeploymentViewSet,
)

router = SimpleRouter()
router.register("audit-entries", AuditEntryViewSet, basename="audit-entry")
router.register("deployment-sharing", DeploymentSharingViewSet, basename="deployment-sharing")
router.register("shared-deployments", SharedDeploymentViewSet, basename="shared-deployment")
router.register("environments", EnvironmentViewSet, basename="environment")
router.register("promotions", PromotionViewSet, basename="promotion")
urlpatterns = router.urls
