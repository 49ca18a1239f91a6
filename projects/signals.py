"""Tell the gateway when a user's keys may have changed validity, whatever made the change.

Not business rules (those are in projects.services and projects.keys): only cache
invalidation, here because users, group membership and organization membership are also
changed from the Django admin and `manage.py`, which call no service of ours.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_delete, post_save

from projects.keys import gateway_forget_user
from projects.models import Membership


def _user_saved(sender, instance, update_fields=None, **kwargs) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login", "password"}:
        return  # a sign-in or a password change: nothing the gateway reads
    gateway_forget_user(instance.pk)


def _user_deleted(sender, instance, **kwargs) -> None:
    gateway_forget_user(instance.pk)


def _membership_changed(sender, instance, **kwargs) -> None:
    gateway_forget_user(instance.user_id)


def _groups_changed(sender, instance, action, reverse, pk_set, **kwargs) -> None:
    # Group ids are part of a cached key ("groups" access policies).
    if not reverse:
        if action.startswith("post_"):
            gateway_forget_user(instance.pk)
    elif action == "pre_clear":  # group.user_set.clear(): only now are its users known
        for user_id in instance.user_set.values_list("pk", flat=True):
            gateway_forget_user(user_id)
    elif action.startswith("post_"):  # group.user_set.add/remove(...): the users are pk_set
        for user_id in pk_set or ():
            gateway_forget_user(user_id)


def connect() -> None:
    User = get_user_model()
    post_save.connect(_user_saved, sender=User, dispatch_uid="projects.user_saved")
    post_delete.connect(_user_deleted, sender=User, dispatch_uid="projects.user_deleted")
    post_save.connect(_membership_changed, sender=Membership, dispatch_uid="projects.membership_saved")
    post_delete.connect(_membership_changed, sender=Membership, dispatch_uid="projects.membership_deleted")
    m2m_changed.connect(_groups_changed, sender=User.groups.through, dispatch_uid="projects.groups_changed")
