"""Drives the official Finch Python SDK (finch-api) against the emulator.

Usage: conformance.py BASE_URL SETTINGS_JSON

SETTINGS_JSON names a file holding access_token, authorization_code,
client_id, client_secret, webhook_secret, employees, deliveries (captured
webhook deliveries: headers and raw body), multi_entity (access_token,
entity_ids and employees of a multi-entity connection) and rate_limited (the
access_token of a connection under an injected upstream rate limit). Every response is parsed with strict
validation, so a field of the wrong shape fails the run. Exits non-zero on the
first SDK error.
"""

import datetime
import json
import sys
import time

from finch import Finch, NotFoundError, AuthenticationError, BadRequestError, RateLimitError
from finch import types as finch_types
from finch.types.hris import IndividualResponse, EmploymentDataResponse, PayStatementResponse
from finch.types.hris.pay_statement_data import PayStatementData


EVENT_TYPES = {
    "account": finch_types.AccountUpdateEvent,
    "job": finch_types.JobCompletionEvent,
    "company": finch_types.CompanyEvent,
    "directory": finch_types.DirectoryEvent,
    "individual": finch_types.IndividualEvent,
    "employment": finch_types.EmploymentEvent,
    "payment": finch_types.PaymentEvent,
    "pay_statement": finch_types.PayStatementEvent,
}


def step(name):
    print(f"ok  {name}", flush=True)


def client(base_url, settings, **kwargs):
    return Finch(
        base_url=base_url,
        client_id=settings["client_id"],
        client_secret=settings["client_secret"],
        webhook_secret=settings["webhook_secret"],
        max_retries=0,
        _strict_response_validation=True,
        **kwargs,
    )


def wait_for_job(finch, job_id):
    for _ in range(500):
        job = finch.jobs.automated.retrieve(job_id)
        if job.completed_at is not None:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never completed")


def main():
    base_url = sys.argv[1]
    with open(sys.argv[2]) as f:
        settings = json.load(f)
    today = datetime.date.today()

    finch = client(base_url, settings, access_token=settings["access_token"])

    company = finch.hris.company.retrieve()
    assert company.id and company.legal_name, company
    step(f"company: {company.legal_name}")

    # Small pages so that auto-paging has to follow paging.offset/count.
    ids = [person.id for person in finch.hris.directory.list(limit=7)]
    assert len(ids) == settings["employees"] and len(set(ids)) == len(ids), ids
    step(f"directory auto-paged: {len(ids)} individuals")

    missing = "00000000-0000-4000-8000-000000000000"
    requests = [{"individual_id": i} for i in ids] + [{"individual_id": missing}]
    individuals = list(finch.hris.individuals.retrieve_many(requests=requests, options={"include": ["ssn"]}))
    assert all(isinstance(r, IndividualResponse) for r in individuals)
    assert [r.code for r in individuals].count(200) == len(ids)
    assert individuals[-1].code == 404 and individuals[-1].body.finch_code == "individual_not_found"
    assert individuals[0].body.emails and individuals[0].body.ssn
    step("individuals batch, with a per-item 404")

    employments = list(finch.hris.employments.retrieve_many(requests=requests))
    assert all(isinstance(r, EmploymentDataResponse) for r in employments)
    assert employments[-1].code == 404
    managed = [e for e in employments[:-1] if e.body.manager is not None]
    assert managed and all(e.body.manager.id in ids for e in managed)
    assert all(e.body.income is not None for e in employments[:-1])
    step("employment batch, with managers and incomes")

    payments = list(finch.hris.payments.list(start_date="2020-01-01", end_date=today.isoformat()))
    assert payments, "seeded connections have a payment history"
    step(f"payments: {len(payments)}")

    latest = payments[-3:]
    statements = list(
        finch.hris.pay_statements.retrieve_many(
            requests=[{"payment_id": p.id, "limit": 5, "offset": 0} for p in latest]
            + [{"payment_id": missing}]
        )
    )
    assert all(isinstance(r, PayStatementResponse) for r in statements)
    for payment, response in zip(latest, statements):
        assert response.code == 200, response
        assert isinstance(response.body, PayStatementData), response.body
        assert response.body.paging.count == len(payment.individual_ids or [])
        assert len(response.body.pay_statements) == min(5, response.body.paging.count)
    assert statements[-1].code == 404
    step("pay statements, paged, with a per-item 404")

    introspection = finch.account.introspect()
    assert introspection.connection_status.status == "connected"
    assert introspection.client_id == settings["client_id"]
    step(f"introspect: connection {introspection.connection_id}")

    created = finch.jobs.automated.create(type="data_sync_all")
    job = wait_for_job(finch, created.job_id)
    assert job.status == "complete" and job.type == "data_sync_all", job
    listed = finch.jobs.automated.list()
    assert any(j.job_id == created.job_id for j in listed.data)
    try:
        finch.jobs.manual.retrieve("not-a-job")
        raise AssertionError("manual jobs are not emulated, so the id is unknown")
    except NotFoundError:
        pass
    step("jobs: create, retrieve, list, manual 404")

    exchanged = Finch(base_url=base_url, max_retries=0, _strict_response_validation=True).access_tokens.create(
        code=settings["authorization_code"],
        client_id=settings["client_id"],
        client_secret=settings["client_secret"],
    )
    assert exchanged.connection_id == introspection.connection_id
    step("auth/token exchanged a code")

    # Sandbox: a new connection and the calls that create data.
    sandbox = client(base_url, settings)
    connection = sandbox.sandbox.connections.create(provider_id="gusto", employee_size=6)
    sb = client(base_url, settings, access_token=connection.access_token)
    people = sb.sandbox.directory.create(body=[{"first_name": "Ada", "last_name": "Lovelace"}, {}])
    assert len(people) == 2
    ada = people[0]["id"]
    sb.sandbox.individual.update(individual_id=ada, preferred_name="Countess")
    sb.sandbox.employment.update(individual_id=ada, title="Analyst")
    sb.sandbox.company.update(
        accounts=None,
        departments=[{"name": "Engineering", "parent": None}],
        ein="12-3456789",
        entity={"type": "corporation", "subtype": "c_corporation"},
        legal_name="Analytical Engines, Inc.",
        locations=None,
        primary_email="hello@example.com",
        primary_phone_number="+14155550100",
    )
    payment = sb.sandbox.payment.create(start_date=(today - datetime.timedelta(days=13)).isoformat(), end_date=today.isoformat())
    configuration = sb.sandbox.jobs.configuration.retrieve()
    assert configuration[0].completion_status == "complete"
    sb.sandbox.jobs.configuration.update(completion_status="complete", type="data_sync_all")
    job = sb.sandbox.jobs.create(type="data_sync_all")
    wait_for_job(sb, job.job_id)
    account = sb.sandbox.connections.accounts.update(connection_status="connected")
    assert account.connection_id == connection.connection_id
    extra = sandbox.sandbox.connections.accounts.create(company_id=connection.company_id, provider_id="gusto")
    assert extra.connection_id == connection.connection_id
    step("sandbox: connection, directory, individual, employment, company, payment, jobs, accounts")

    names = {p.first_name for p in sb.hris.directory.list()}
    assert "Ada" in names, names
    assert sb.hris.company.retrieve().legal_name == "Analytical Engines, Inc."
    synced = [p for p in sb.hris.payments.list(start_date=today.isoformat(), end_date=today.isoformat()) if p.id == payment.payment_id]
    assert synced, "the sandbox payment is synced"
    statements = list(sb.hris.pay_statements.retrieve_many(requests=[{"payment_id": payment.payment_id}]))
    assert statements[0].code in (200, 202), statements[0]
    step("sandbox data visible after the sync")

    for delivery in settings["deliveries"]:
        body = delivery["body"]
        event = finch.webhooks.unwrap(body, delivery["headers"], secret=settings["webhook_secret"])
        parsed = json.loads(body)
        assert event.event_type == parsed["event_type"], event
        # unwrap() constructs leniently; validate strictly against the event's own type too.
        EVENT_TYPES[parsed["event_type"].split(".")[0]].model_validate(parsed)
        step(f"webhooks.unwrap: {event.event_type}")
    assert settings["deliveries"], "at least one delivery was captured"

    multi = settings["multi_entity"]
    me = client(base_url, settings, access_token=multi["access_token"])
    try:
        me.hris.directory.list()
        raise AssertionError("a multi-entity read without entity_ids must be refused")
    except BadRequestError as error:
        assert error.status_code == 400 and error.body["name"] == "invalid_request_error", error.body
    people = 0
    for entity_id in multi["entity_ids"]:
        ids = [p.id for p in me.hris.directory.list(entity_ids=[entity_id], limit=3)]
        people += len(ids)
        assert me.hris.company.retrieve(entity_ids=[entity_id]).id
        requests = [{"individual_id": i} for i in ids]
        if requests:
            assert all(r.code == 200 for r in me.hris.individuals.retrieve_many(requests=requests, entity_ids=[entity_id]))
            assert all(r.code == 200 for r in me.hris.employments.retrieve_many(requests=requests, entity_ids=[entity_id]))
        entity_payments = list(me.hris.payments.list(start_date="2020-01-01", end_date=today.isoformat(), entity_ids=[entity_id]))
        assert entity_payments, "each entity runs payroll"
        responses = list(me.hris.pay_statements.retrieve_many(requests=[{"payment_id": entity_payments[-1].id}], entity_ids=[entity_id]))
        assert responses[0].code == 200, responses[0]
    assert people == multi["employees"], people
    multi_introspection = me.account.introspect()
    assert [e.id for e in multi_introspection.entities] == multi["entity_ids"], multi_introspection.entities
    method = multi_introspection.authentication_methods[0]
    assert method.type == "assisted" and method.connection_status.last_successful_sync is not None, method
    step(f"multi-entity: entity_ids on every product, {len(multi['entity_ids'])} entities in introspect")

    limited = client(base_url, settings, access_token=settings["rate_limited"])
    try:
        limited.hris.company.retrieve()
        raise AssertionError("the injected rate limit must answer 429")
    except RateLimitError as error:
        assert error.status_code == 429 and error.body["finch_code"] == "upstream_rate_limit_exceeded", error.body
        assert int(error.response.headers["retry-after"]) >= 1
    step("429 upstream_rate_limit_exceeded with Retry-After")

    assert sb.account.disconnect().status == "success"
    try:
        sb.hris.company.retrieve()
        raise AssertionError("a disconnected token must stop working")
    except AuthenticationError:
        pass
    step("disconnect")
    print("conformance: all SDK calls parsed", flush=True)


if __name__ == "__main__":
    main()
