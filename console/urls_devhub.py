"""Developer Hub pages: models to call, API keys, usage."""

from django.urls import path

from console.views import coming_soon

app_name = "devhub"

urlpatterns = [
    path("models/", coming_soon("Models", "Models you can call, with endpoints and sample requests.", "ask your platform team for an endpoint."), name="models"),
    path("keys/", coming_soon("API Keys", "Keys for calling models through the gateway.", "no keys can be created."), name="keys"),
    path("usage/", coming_soon("Usage", "Tokens, requests and cost of your keys.", "no usage is recorded."), name="usage"),
]
