from django.urls import path

from console.views import coming_soon

app_name = "catalog"

urlpatterns = [
    path("", coming_soon("Catalog", "Models from the Hugging Face Hub, NVIDIA NIM and your own storage.", "models can be added in the Django admin."), name="index"),
]
