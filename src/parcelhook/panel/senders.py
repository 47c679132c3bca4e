"""Settings › Sender addresses: where the account ships from (labels print it as "From")."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from parcelhook.domain.errors import DomainError
from parcelhook.domain.senders import FIELD_NAMES, SenderAddress, parse_sender_address
from parcelhook.panel.i18n import N_, Gettext
from parcelhook.panel.web import panel_of, text_field

router = APIRouter(include_in_schema=False)
_BASE = "/settings/sender-addresses"
# the form's fields in order: name, label, whether it must be filled in
FORM: Final = (
    ("company_name", N_("Company"), False),
    ("contact_name", N_("Contact name"), True),
    ("street", N_("Street"), True),
    ("house_number", N_("House number"), False),
    ("postal_code", N_("Postal code"), True),
    ("city", N_("City"), True),
    ("country", N_("Country (ISO code, e.g. NL)"), True),
    ("country_state", N_("State or province"), False),
    ("email", N_("E-mail"), False),
    ("telephone", N_("Telephone"), False),
    ("vat_number", N_("VAT number"), False),
    ("eori_number", N_("EORI number"), False),
    ("label", N_("Label (shown in lists)"), False),
)
_LABELS: Final = {name: label for name, label, _required in FORM}


def problem_words(exc: DomainError, _: Gettext) -> str:
    """A sender address's error in the reader's language, naming the field as the form does
    (the domain's words name it as the API does, e.g. `contact_name`)."""
    field = _(_LABELS[exc.field]) if exc.field in _LABELS else None
    if field is None:
        return _(exc.message)
    if exc.field == "country" and exc.code != "required":
        return _("The country must be a two-letter ISO code, such as NL.")
    if exc.field == "email" and exc.message.endswith("e-mail address."):
        return _("The e-mail address is not valid.")
    if exc.code == "required":
        return _("%(field)s is required.") % {"field": field}
    if exc.message.endswith("255 characters."):
        return _("%(field)s must be at most 255 characters.") % {"field": field}
    return _("%(field)s holds characters that cannot be saved.") % {"field": field}


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
        form=FORM,
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
        problem = problem_words(exc, panel.gettext(request))
        return _page(request, found, typed=typed, problem=problem, status=422)
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
        problem = problem_words(exc, panel.gettext(request))
        return _page(request, found, editing=editing, typed=typed, problem=problem, status=422)
    return panel.redirect(request, f"{_BASE}?notice=saved")
