"""Settings › Integrations: the list, "Add integration", and each one's Configure form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from parcelhook.domain import keys, systems
from parcelhook.domain.errors import DomainError, NotFound
from parcelhook.domain.integrations import Integration, parse_changes
from parcelhook.panel import log, present
from parcelhook.panel.i18n import N_
from parcelhook.panel.web import not_found, panel_of, text_field, wants_json
from parcelhook.service import TestResult

router = APIRouter(include_in_schema=False)
_FORM_FIELDS = ("webhook_active", "webhook_url", "webhook_signature_key")
_NOTICES = {
    "saved": N_("Settings saved."),
    "added": N_("Integration added. Configure its webhook below."),
}


@dataclass(frozen=True, slots=True)
class Typed:
    """The Configure form as submitted; the key is kept only to act on, never to show."""

    webhook_active: bool
    webhook_url: str
    key: str = field(repr=False)
    clear_key: bool

    @classmethod
    def from_form(cls, form: FormData) -> Typed:
        return cls(
            webhook_active="webhook_active" in form,
            webhook_url=text_field(form, "webhook_url").strip(),
            key=text_field(form, "webhook_signature_key", 10_000),
            clear_key="clear_signature_key" in form,
        )

    def changes(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "webhook_active": self.webhook_active,
            "webhook_url": self.webhook_url,
        }
        # an empty key field keeps the stored key; only the checkbox removes it
        if self.key or self.clear_key:
            data["webhook_signature_key"] = self.key
        return data


def _problems(request: Request, exc: DomainError) -> dict[str, str]:
    """The error beside its field, in the reader's language where the catalogue has it."""
    _ = panel_of(request).gettext(request)
    name = exc.field if exc.field in _FORM_FIELDS else None
    rules = exc.extra.get("rules")
    message = present.weak_key_message(rules, _) if rules else _(exc.message)
    return {name or "form": message}


async def _configure(
    request: Request,
    integration: Integration,
    *,
    status: int = 200,
    typed: Typed | None = None,
    problems: dict[str, str] | None = None,
    failed_rules: list[str] | None = None,
    test: TestResult | None = None,
    tested: bool = False,
) -> Response:
    panel = panel_of(request)
    _ = panel.gettext(request)
    notice = _NOTICES.get(request.query_params.get("notice", ""))
    notice = _(notice) if notice else None
    if request.query_params.get("notice") == "sent":
        notice = log.waiting_notice(request.query_params.get("count", ""), panel.ngettext(request))
    return panel.page(
        request,
        "configure.html",
        status,
        integration=integration,
        system_name=present.heading_system(integration, _),
        is_api=integration.system == systems.API,
        events=present.events_for(integration.system),
        key_last4=(
            keys.last4(integration.webhook_signature_key)
            if integration.webhook_signature_key
            else None
        ),
        active=typed.webhook_active if typed else integration.webhook_active,
        url=typed.webhook_url if typed else (integration.webhook_url or ""),
        # a typed key is never sent back to the browser, so say why the field is empty
        key_dropped=bool(typed and typed.key),
        # translated here: a "%" in a rule would trip the template's gettext formatting
        rules=[
            (rule, _(words), rule in (failed_rules or [])) for rule, words in keys.RULES.items()
        ],
        checked_rules=failed_rules is not None,
        problems=problems or {},
        test=test,
        # without JavaScript the page comes back after Test: focus returns to the button
        tested=tested,
        test_summary=present.test_summary(test, _) if test else None,
        notice=notice if status == 200 else None,
        health=await log.health(panel, panel.account_id(request), integration),
    )


def _list(
    request: Request,
    found: list[Integration],
    status: int = 200,
    *,
    problem: str | None = None,
    shop_name: str = "",
    system: str = systems.API,
) -> Response:
    _ = panel_of(request).gettext(request)
    return panel_of(request).page(
        request,
        "integrations.html",
        status,
        integrations=found,
        system_name=lambda system: _(present.system_name(system)),
        systems=systems.SYSTEMS,
        problem=problem,
        shop_name=shop_name,
        system=system,
    )


@router.get("/settings/integrations")
async def integrations(request: Request) -> Response:
    panel = panel_of(request)
    account_id = panel.account_id(request)
    return _list(request, await panel.service.list_integrations(account_id))


@router.post("/settings/integrations")
async def add_integration(request: Request) -> Response:
    panel = panel_of(request)
    account_id = panel.account_id(request)
    form = await panel.checked_form(request)
    shop_name = text_field(form, "shop_name", 300).strip()
    system = text_field(form, "system", 40)
    try:
        changes = parse_changes({"shop_name": shop_name, "system": system}, creating=True)
        created = await panel.service.create_integration(account_id, changes)
    except DomainError as exc:
        found = await panel.service.list_integrations(account_id)
        return _list(request, found, 422, problem=exc.message, shop_name=shop_name, system=system)
    return panel.redirect(request, f"/settings/integrations/{created.id}?notice=added")


@router.get("/settings/integrations/{integration_id:int}")
async def configure(request: Request, integration_id: int) -> Response:
    panel = panel_of(request)
    account_id = panel.account_id(request)
    return await _configure(request, await panel.integration(account_id, integration_id))


@router.post("/settings/integrations/{integration_id:int}")
async def save(request: Request, integration_id: int) -> Response:
    """Save, or (the Test button without JavaScript) test and show Configure again."""
    panel = panel_of(request)
    account_id = panel.account_id(request)
    form = await panel.checked_form(request)
    integration = await panel.integration(account_id, integration_id)
    typed = Typed.from_form(form)
    if text_field(form, "do", 10) == "test":
        return await _test(request, account_id, integration, typed)
    try:
        changes = parse_changes(typed.changes(), creating=False)
        await panel.service.update_integration(account_id, integration.id, changes)
    except NotFound:
        raise not_found() from None
    except DomainError as exc:
        return await _configure(
            request,
            integration,
            status=422,
            typed=typed,
            problems=_problems(request, exc),
            failed_rules=exc.extra.get("rules"),
        )
    return panel.redirect(request, f"/settings/integrations/{integration.id}?notice=saved")


@router.post("/settings/integrations/{integration_id:int}/test")
async def test_webhook(request: Request, integration_id: int) -> Response:
    """The Test button's JSON answer for the page's script (the page itself without it)."""
    panel = panel_of(request)
    account_id = panel.account_id(request)
    form = await panel.checked_form(request)
    integration = await panel.integration(account_id, integration_id)
    return await _test(request, account_id, integration, Typed.from_form(form))


async def _test(
    request: Request, account_id: int, integration: Integration, typed: Typed
) -> Response:
    panel = panel_of(request)
    try:
        result = await panel.service.test_webhook(
            account_id, integration.id, url=typed.webhook_url, key=typed.key or None
        )
    except NotFound:
        raise not_found() from None
    except DomainError as exc:
        if wants_json(request):
            error = exc.as_dict()
            (error["message"],) = _problems(request, exc).values()
            return panel.json(request, {"error": error}, exc.status)
        return await _configure(
            request,
            integration,
            status=exc.status,
            typed=typed,
            problems=_problems(request, exc),
            failed_rules=exc.extra.get("rules"),
            tested=True,
        )
    if wants_json(request):
        body = {
            "delivered": result.delivered,
            "status_code": result.status_code,
            "duration_ms": result.duration_ms,
            "response_excerpt": result.response_excerpt,
            "error": result.error,
            "summary": present.test_summary(result, panel.gettext(request)),
        }
        return panel.json(request, body)
    return await _configure(request, integration, typed=typed, test=result, tested=True)
