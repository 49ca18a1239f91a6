"""Shared form plumbing: field-by-field HTMX validation that never loses what the user typed."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from console.ids import parse_id

VALIDATE_PARAM = "_validate"


class IdsChoiceField(forms.ModelMultipleChoiceField):
    """Several objects by id (checkboxes). A value that can be no id (past 64 bits) is refused in
    the field's words before the query: Django's IN (...) check let SQLite raise an OverflowError,
    a 500 on `make run`."""

    def _check_values(self, value):
        for pk in value:
            if parse_id(pk) is None:
                raise forms.ValidationError(  # as for any id that isn't on the list
                    self.error_messages["invalid_choice"], code="invalid_choice", params={"value": pk}
                )
        return super()._check_values(value)


class StyledForm(forms.Form):
    """Base for console forms; validation errors from services land on the right field."""

    def add_service_error(self, exc) -> None:
        # Django's ValidationError may carry a dict (field → messages) or plain messages.
        if hasattr(exc, "error_dict"):
            for field, errors in exc.error_dict.items():
                target = field if field in self.fields else None
                for error in errors:
                    self.add_error(target, error)
        else:
            for message in exc.messages:
                self.add_error(None, message)


def field_validation_response(request: HttpRequest, form: forms.BaseForm, validate_url: str) -> HttpResponse | None:
    """If this is an htmx request to validate one field, answer with that field alone."""
    name = request.POST.get(VALIDATE_PARAM)
    if not (getattr(request, "htmx", False) and name and name in form.fields):
        return None
    form.is_valid()  # runs clean(); we show only this field's errors
    bound = form[name]
    html = render_to_string(
        "console/htmx/field.html", {"field": bound, "validate_url": validate_url}, request=request
    )
    return HttpResponse(html)
