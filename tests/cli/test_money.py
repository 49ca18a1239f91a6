"""`modeldeck usage` shows money as the console does: the CLI's copy of console.money.money_text
(it imports nothing of the server) agrees with it on a table of amounts, and the command prints
the REST API's sums through it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from console.money import money_text
from gateway.models import UsageRecord
from modeldeck_cli import money as cli_money
from modeldeck_cli.main import _money
from projects.keys import api_key_create
from projects.models import Organization
from tests.cli.conftest import run
from tests.cli.test_cli_operate import _signed_in
from tests.gateway.conftest import make_deployment

AMOUNTS = [
    None, "", 0, "0", "0E-8", Decimal("0E-8"), Decimal("0.00000000"), 25, "25", "0.5", "7.50", "1.5125052",
    Decimal("0.0125"), Decimal("0.012505"), Decimal("0.01250000"), Decimal("0.0100000000000000"), "0.00005",
    "0.00015", "0.00025", "0.000099999", "0.0001", "0.00009999", Decimal("0.00000500"), Decimal("0.00001234"),
    Decimal("0.00000001"), "0.000000005", "0.000000015", "0.0000052", "0.00000525", "0.00000535", "1e-9",
    "12345678.123456", "-0.0125", "-0.0000052", "-3", 1.1, 0.1 + 0.2, "1E+3", "12.34567", "12.34565", "12.34575",
    "not money", "NaN", "Infinity",
]  # fmt: skip


@pytest.mark.parametrize("value", AMOUNTS, ids=repr)
def test_the_cli_shows_every_amount_as_the_console_does(value):
    assert cli_money.money_text(value) == money_text(value)
    if value not in (None, ""):
        assert _money(value, "USD") == f"{money_text(value)} USD"  # what `modeldeck usage` prints


def test_the_cli_and_console_agree_on_every_cost_a_record_can_hold():
    # Usage records keep 8 places: every power-of-ten scale and a spread of digits in between.
    for exponent in range(-8, 7):
        for digits in ("1", "25", "999", "1005", "12345", "99995", "50000001"):
            value = Decimal(digits).scaleb(exponent - len(digits) + 1)
            assert cli_money.money_text(value) == money_text(value), value


@pytest.mark.django_db(transaction=True)
def test_usage_prints_costs_as_the_console_does(client_venv, demo, live_server, tmp_path, login_limits_reset):
    """It printed every cost with six decimals: 1.512500 USD, and 0.000005 for 0.0000052."""
    org = Organization.objects.get(slug="demo")
    project = org.projects.get(slug="demo")
    cheap, dear = make_deployment(project, "cheap"), make_deployment(project, "dear")
    key, _ = api_key_create(user=demo, organization=org, name="bot")
    for n, (deployment, cost) in enumerate(((cheap, "0.0000052"), (dear, "1.5"), (dear, "0.0125"))):
        UsageRecord.objects.create(
            request_id=f"req-{n}", deployment=deployment, deployment_name=deployment.name, organization=org,
            user=demo, api_key_id=key.pk, api_key_prefix=key.prefix, route="chat.completions", status_code=200,
            latency_ms=3.0, prompt_tokens=10, completion_tokens=5, cost=Decimal(cost), currency="USD",
            created_at=timezone.now(),
        )  # fmt: skip
    home = _signed_in(client_venv, tmp_path, live_server.url)

    usage = run(client_venv, home, "usage")
    assert usage.returncode == 0, usage.stderr
    rows = {line.split()[0]: line.split()[-2:] for line in usage.stdout.splitlines()[2:]}
    assert rows["cheap"] == ["0.0000052", "USD"], usage.stdout
    assert rows["dear"] == ["1.5125", "USD"], usage.stdout
    assert rows["TOTAL"] == ["1.5125", "USD"], usage.stdout  # 1.5125052 to the console's 4 places
