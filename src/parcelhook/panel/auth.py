"""Signing in and out of the panel."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from parcelhook.panel.sessions import Session
from parcelhook.panel.web import panel_of, text_field

router = APIRouter(include_in_schema=False)
HOME = "/settings/integrations"


def safe_next(target: str) -> str:
    # only paths on this site: "//host" and "/\host" would leave it
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return HOME


@router.get("/")
async def home(request: Request) -> Response:
    panel = panel_of(request)
    signed_in = panel.session(request).account_id is not None
    return panel.redirect(request, HOME if signed_in else "/login")


@router.get("/login")
async def login_page(request: Request, next: str = HOME) -> Response:
    panel = panel_of(request)
    if panel.session(request).account_id is not None:
        return panel.redirect(request, safe_next(next))
    return panel.page(request, "login.html", next=safe_next(next), email="", problem=None)


@router.post("/login")
async def login(request: Request) -> Response:
    panel = panel_of(request)
    form = await panel.checked_form(request)
    email = text_field(form, "email", 320).strip()
    password = text_field(form, "password", 1024)
    target = safe_next(text_field(form, "next") or HOME)

    _ = panel.gettext(request)

    def again(status: int, problem: str) -> Response:
        return panel.page(request, "login.html", status, next=target, email=email, problem=problem)

    if not email or not password:
        return again(422, _("Enter your e-mail address and your password."))
    address = request.client.host if request.client else "unknown"
    wait_s = panel.throttle.attempt(email, address)
    if wait_s:
        response = again(
            429,
            _("Too many failed sign-ins. Wait %(seconds)d seconds before trying again.")
            % {"seconds": wait_s},
        )
        response.headers["Retry-After"] = str(wait_s)
        return response
    account_id = await panel.service.sign_in(email, password)
    if account_id is None:
        return again(401, _("That e-mail address and password do not match an account."))
    panel.throttle.succeeded(email, address)
    # a new session id and CSRF token: a cookie planted before sign-in is worthless after
    generation = await panel.service.session_generation(account_id)
    panel.replace_session(request, Session.fresh(account_id, generation or 0))
    return panel.redirect(request, target)


@router.post("/logout")
async def logout(request: Request) -> Response:
    panel = panel_of(request)
    await panel.checked_form(request)
    return await panel.sign_out(request)
