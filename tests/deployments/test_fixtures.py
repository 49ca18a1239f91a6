"""The deployment fixtures say truly whether the on-commit push ran (plain django_db tests)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_in_a_plain_test_deploy_queues_the_push_but_nothing_commits(deploy, tenants):
    deployment = deploy("chat")
    assert deployment.state == "pending" and tenants.project.gpu_used() == 1
    assert deployment.pool.api_url == "http://127.0.0.1:9"  # no sandbox started for nothing


def test_deploy_pushed_runs_the_on_commit_push_against_the_sandbox(deploy_pushed, emulator):
    deployment = deploy_pushed("chat")
    assert emulator.get_object("Deployment", "acme-research", "chat-r1") is not None
    assert emulator.get_object("Service", "acme-research", "chat") is not None
    assert deployment.state != "pending"  # the push moved it on
