"""The one create/edit view (NetBox's ObjectEditView idea): a form page is a few lines, not a skeleton.

Every create/edit page does the same steps: find the object (404 for another organization),
ask console.permissions, parse the form, answer an HTMX field validation with that field alone,
call the service, put the service's ValidationError on the form's fields, say what happened and
redirect. A page subclasses ``EditView`` and says only what differs: its form, templates, object,
permission, service call and message.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from console import permissions
from console.forms import field_validation_response
from console.http import redirect_after_post


class EditView(LoginRequiredMixin, View):
    form_class: type[BaseForm]
    template_name: str  # the full page
    fragment_template: str | None = None  # the form alone, swapped in by an HTMX POST
    action = "change"  # what console.permissions must allow on the object (or organization)
    what: str | None = None  # how a refusal names the objects ("projects")
    read_by_all = False  # True: everyone in the organization sees the page; only a POST is asked

    # --- what a page says -------------------------------------------------------------------

    def get_object(self, request: HttpRequest, **kwargs: Any) -> Any:
        """The object being edited (a selector that 404s for others), or None to create."""
        return None

    def permission_target(self, request: HttpRequest, obj: Any) -> Any:
        """What the permission is asked on: the object, or for a create its organization/project."""
        return obj

    def check_permission(self, request: HttpRequest, obj: Any) -> None:
        """Raise PermissionDenied unless console.permissions allows ``action`` here."""
        if self.read_by_all and request.method != "POST":
            return
        permissions.require(request.user, self.action, self.permission_target(request, obj), self.what)

    def form_kwargs(self, request: HttpRequest, obj: Any) -> dict[str, Any]:
        return {}

    def form_valid(self, request: HttpRequest, form: BaseForm) -> bool:
        """Whether to go on to the service (a page may add errors only it can see, e.g. an upload
        cut off at its size limit)."""
        return form.is_valid()

    def save(self, request: HttpRequest, obj: Any, form: BaseForm) -> Any:
        """Call the service with the form's parsed data; return what it made or changed."""
        raise NotImplementedError

    def service_error(self, form: BaseForm, exc: ValidationError) -> None:
        """Put the service's refusal on the form's fields (what no field shows goes on top)."""
        form.add_service_error(exc)

    def success_message(self, saved: Any) -> str:
        return "Saved."

    def success_url(self, request: HttpRequest, saved: Any) -> str:
        return saved.get_absolute_url()

    def context(self, request: HttpRequest, obj: Any, form: BaseForm) -> dict[str, Any]:
        return {}

    # --- the steps every page shares --------------------------------------------------------

    def get(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        return self._handle(request, kwargs)

    def post(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        return self._handle(request, kwargs)

    def _handle(self, request: HttpRequest, kwargs: dict[str, Any]) -> HttpResponse:
        obj = self.get_object(request, **kwargs)
        self.check_permission(request, obj)
        form = self.form_class(request.POST or None, request.FILES or None, **self.form_kwargs(request, obj))
        if request.method == "POST":
            partial = field_validation_response(request, form, request.path)
            if partial is not None:
                return partial
            if self.form_valid(request, form):
                try:
                    saved = self.save(request, obj, form)
                except ValidationError as exc:
                    self.service_error(form, exc)
                else:
                    messages.success(request, self.success_message(saved))
                    return redirect_after_post(request, self.success_url(request, saved))
        context = {"form": form, "validate_url": request.path, **self.context(request, obj, form)}
        fragment = request.htmx and request.method == "POST" and self.fragment_template
        return render(request, fragment or self.template_name, context)


class ActionView(LoginRequiredMixin, View):
    """A POST that asks one service to act on one object (delete, move, refresh), then says so.

    The object comes from a selector (404 for others); the service asks console.permissions;
    its ValidationError becomes an error message, never a 500."""

    http_method_names = ["post"]

    def get_object(self, request: HttpRequest, **kwargs: Any) -> Any:
        raise NotImplementedError

    def act(self, request: HttpRequest, obj: Any) -> Any:
        """Call the service; what it returns goes to ``success_message``."""
        raise NotImplementedError

    def success_message(self, obj: Any, result: Any) -> str:
        """What to tell the user ("" for nothing: the page they land on shows it)."""
        return "Done."

    def success_url(self, request: HttpRequest, obj: Any) -> str:
        return obj.get_absolute_url()

    def failure_url(self, request: HttpRequest, obj: Any) -> str:
        return self.success_url(request, obj)

    def post(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        obj = self.get_object(request, **kwargs)
        try:
            result = self.act(request, obj)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect(self.failure_url(request, obj))
        text = self.success_message(obj, result)
        if text:
            messages.success(request, text)
        return redirect(self.success_url(request, obj))
