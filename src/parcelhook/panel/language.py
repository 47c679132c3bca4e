"""The language switcher: the choice is remembered in a cookie for the browser's session."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from parcelhook.panel import i18n
from parcelhook.panel.auth import safe_next
from parcelhook.panel.web import panel_of, text_field

router = APIRouter(include_in_schema=False)


@router.post("/language")
async def choose_language(request: Request) -> Response:
    panel = panel_of(request)
    form = await panel.checked_form(request)
    lang = text_field(form, "lang", 10)
    response = panel.redirect(request, safe_next(text_field(form, "next") or "/"))
    if lang in i18n.LANGUAGES:
        response.set_cookie(
            i18n.COOKIE,
            lang,
            path="/",
            httponly=True,
            samesite="lax",
            secure=panel.secure_cookies or request.url.scheme == "https",
        )
    return response
