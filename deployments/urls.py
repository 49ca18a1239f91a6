from django.urls import path

from console.views import coming_soon

app_name = "deployments"

urlpatterns = [
    path("deployments/", coming_soon("Model Deployments", "Models running on your compute pools.", "nothing can be deployed from the console."), name="list"),
    path("pools/", coming_soon("Compute Pools", "Kubernetes clusters your deployments land on.", "pools can be registered in the Django admin."), name="pools"),
]
