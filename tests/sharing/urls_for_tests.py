"""The console's URLs plus the governance pages, until the lead includes sharing.urls in console/urls.py."""

from django.urls import include, path

from console.urls import urlpatterns as console_urlpatterns

urlpatterns = list(console_urlpatterns)
if not any(getattr(p, "namespace", None) == "sharing" for p in console_urlpatterns):
    urlpatterns.append(path("", include("sharing.urls")))
