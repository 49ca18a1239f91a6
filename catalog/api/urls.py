from rest_framework.routers import SimpleRouter

from catalog.api.views import BundleViewSet, CatalogModelViewSet, MappingViewSet, NgcViewSet

router = SimpleRouter()
router.register("models", CatalogModelViewSet, basename="catalog-model")
router.register("ngc", NgcViewSet, basename="ngc")
router.register("bundles", BundleViewSet, basename="bundle")
router.register("mappings", MappingViewSet, basename="maas-mapping")
urlpatterns = router.urls
