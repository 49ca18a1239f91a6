"""The compute pool page: the Connection and GPUs cards agree with each other and with what the
deployments hold, before and after Test connection (whose answer swaps both cards)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from deployments.models import ComputePool
from tests.conftest import login

pytestmark = pytest.mark.django_db


def _card(html: str, card_id: str) -> str:
    return html.split(f'id="{card_id}"')[1].split('<div class="card')[0]


def test_pool_page_before_and_after_test_connection(tenants, operator, pool, deploy, cluster):
    deploy("chat")  # holds 1 GPU of its project's quota on this pool
    # What the status sync leaves behind after a start: the pool reached and stamped, never tested.
    ComputePool.objects.filter(pk=pool.pk).update(reachable=True, last_checked_at=timezone.now())
    client = login(operator)
    url = reverse("deployments:pool_detail", args=[pool.pk])

    html = client.get(url).content.decode()
    check = _card(html, "pool-check")
    assert "Not tested yet" in check and "Last tested" not in check
    assert "Status sync: reachable since" in check and "{#" not in check
    gpus = html.split('id="pool-gpus"')[1].split("</div></div>")[0]
    assert "—" in gpus and "test the connection to count them" in gpus
    assert "1 held by deployments on this pool" in gpus
    row = client.get(reverse("deployments:pools")).content.decode().split(url, 1)[1].split("</tr>")[0]
    assert "Not counted" in row and "tested" not in row  # the list: not 0 GPUs, and no "tested"

    answer = client.post(reverse("deployments:pool_test", args=[pool.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "Connected" in answer and "Last tested" in answer and "Not tested yet" not in answer
    # The GPUs card comes along out of band: 2 sandbox nodes × 4 GPUs, and what is held.
    assert 'id="pool-gpus" hx-swap-oob="true"' in answer
    gpus = answer.split('id="pool-gpus"')[1].split("</div></div>")[0]
    assert '<div class="value">8</div>' in gpus and "1 held by deployments on this pool" in gpus

    html = client.get(url).content.decode()  # a reload shows the same
    assert "Not tested yet" not in html and "Last tested" in html
    gpus = html.split('id="pool-gpus"')[1].split("</div></div>")[0]
    assert '<div class="value">8</div>' in gpus and "hx-swap-oob" not in gpus
    row = client.get(reverse("deployments:pools")).content.decode().split(url, 1)[1].split("</tr>")[0]
    assert '<td class="num" data-label="GPUs">8</td>' in row


def test_a_failed_test_does_not_count_zero_gpus(tenants, operator, pool):
    client = login(operator)  # the pool answers nowhere (port 9)
    answer = client.post(reverse("deployments:pool_test", args=[pool.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "Could not connect" in answer
    gpus = answer.split('id="pool-gpus"')[1].split("</div></div>")[0]
    assert "—" in gpus and "the last test could not connect" in gpus and "0 held by deployments" in gpus


def test_pool_list_says_what_to_do_for_an_untested_pool_and_agrees_with_its_page(tenants, operator, pool, cluster):
    """The list said a bare "Not tested" and "GPUs —" for a pool whose page (after a test)
    counted 8: the list reads the same test, says Connected, and tells how to count GPUs."""
    client = login(operator)
    url = reverse("deployments:pool_detail", args=[pool.pk])
    row = client.get(reverse("deployments:pools")).content.decode().split(url, 1)[1].split("</tr>")[0]
    assert "Not tested yet" in row and f'href="{url}#pool-check">Test connection</a> to count its GPUs' in row

    client.post(reverse("deployments:pool_test", args=[pool.pk]), HTTP_HX_REQUEST="true")
    page = client.get(url).content.decode().split('id="pool-gpus"')[1].split("</div></div>")[0]
    row = client.get(reverse("deployments:pools")).content.decode().split(url, 1)[1].split("</tr>")[0]
    assert '<div class="value">8</div>' in page and '<td class="num" data-label="GPUs">8</td>' in row
    assert "Connected" in row and "Test connection" not in row and "Not tested" not in row

    # The status sync failing later outranks the old good test, on the list as on the page.
    ComputePool.objects.filter(pk=pool.pk).update(reachable=False, last_checked_at=timezone.now())
    row = client.get(reverse("deployments:pools")).content.decode().split(url, 1)[1].split("</tr>")[0]
    assert "Unreachable" in row
