"""Settings › Sender addresses: where the account ships from (labels print it as "From")."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from parcelhook.domain.errors import DomainError
from parcelhook.domain.senders import FIELD_NAMES, SenderAddress, parse_sender_address
from parcelhook.panel.web import panel_of, text_field

router = APIRouter(include_in_schema=False)
_BASE = "/settings/sender-addresses"


def _typed(form: FormData) -> dict[str, str]:
    return {name: text_field(form, name, 300) for name in FIELD_NAMES}


def _page(
    request: Request,
    found: list[SenderAddress],
    *,
    editing: SenderAddress | None = None,
    typed: dict[str, str] | None = None,
    problem: str | None = None,
    status: int = 200,
) -> Response:
    values = typed or ({n: getattr(editing.address, n) for n in FIELD_NAMES} if editing else {})
    return panel_of(request).page(
        request,
        "senders.html",
        status,
        addresses=found,
        editing=editing,
        values=values,
        problem=problem,
        saved=request.query_params.get("notice") == "saved",
    )


@router.get(_BASE)
async def sender_addresses(request: Request) -> Response:
    panel = panel_of(request)
    return _page(request, await panel.service.sender_addresses(panel.account_id(request)))


@router.post(_BASE)
async def add_sender_address(request: Request) -> Response:
    panel = panel_of(request)
    account_id = panel.account_id(request)
    form = await panel.checked_form(request)
    typed = _typed(form)
    try:
        await panel.service.add_sender_address(account_id, parse_sender_address(typed))
    except DomainError as exc:
        found = await panel.service.sender_addresses(account_id)
        return _page(request, found, typed=typed, problem=exc.message, status=422)
    return panel.redirect(request, f"{_BASE}?notice=saved")


@router.get(_BASE + "/{sender_id:int}")
async def edit_sender_address(request: Request, sender_id: int) -> Response:
    panel = panel_of(request)
    account_id = panel.account_id(request)
    editing = await panel.sender_address(account_id, sender_id)
    return _page(request, await panel.service.sender_addresses(account_id), editing=editing)


@router.post(_BASE + "/{sender_id:int}")
async def save_sender_address(request: Request, sender_id: int) -> Response:
    panel = panel_of(request)
    account_id = panel.account_id(request)
    form = await panel.checked_form(request)
    editing = await panel.sender_address(account_id, sender_id)
    if "delete" in form:
        await panel.service.remove_sender_address(account_id, editing.id)
        return panel.redirect(request, f"{_BASE}?notice=saved")
    typed = _typed(form)
    try:
        fields = parse_sender_address(typed)
        await panel.service.change_sender_address(
            account_id, editing.id, fields, default="is_default" in form
        )
    except DomainError as exc:
        found = await panel.service.sender_addresses(account_id)
        return _page(request, found, editing=editing, typed=typed, problem=exc.message, status=422)
    return panel.redirect(request, f"{_BASE}?notice=saved")
