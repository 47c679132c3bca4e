"""What every panel route shares: sessions, CSRF checks, rendering and the error pages."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.datastructures import FormData

from parcelhook import __version__
from parcelhook.domain.deliveries import Delivery
from parcelhook.domain.errors import NotFound
from parcelhook.domain.integrations import Integration
from parcelhook.domain.senders import SenderAddress
from parcelhook.panel import i18n, present
from parcelhook.panel.i18n import N_
from parcelhook.panel.sessions import COOKIE, MAX_AGE_S, Session, SessionCodec
from parcelhook.panel.throttle import SignInThrottle
from parcelhook.service import Service

# inline scripts and styles are refused: a stray injection cannot run anything
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # pages carry API keys and settings: keep them out of shared caches and history
    "Cache-Control": "no-store",
}


class PageError(Exception):
    """Answer with the error page `status` (404, 403, 429…)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status, self.title, self.message = status, title, message


def not_found() -> PageError:
    return PageError(404, N_("Not found"), N_("There is nothing here, or it is not yours to see."))


class SignInRequired(Exception):
    pass


def panel_of(request: Request) -> Panel:
    panel: Panel = request.app.state.panel
    return panel


def text_field(form: FormData, name: str, max_len: int = 4096) -> str:
    """A form field as text (absent, or a file: empty), cut to `max_len`."""
    value = form.get(name)
    return value[:max_len] if isinstance(value, str) else ""


_MAX_ID: Final = 2**63 - 1


class Panel:
    """The panel's collaborators, built once in `install_panel`."""

    def __init__(
        self,
        service: Service,
        codec: SessionCodec,
        throttle: SignInThrottle,
        *,
        secure_cookies: bool,
    ) -> None:
        self.service = service
        self.codec = codec
        self.throttle = throttle
        self.secure_cookies = secure_cookies
        self.translations = i18n.load()
        # one environment per language, each with its catalogue installed for {% trans %}
        self.environments = {lang: self._environment(lang) for lang in i18n.LANGUAGES}
        self.templates = self.environments[i18n.DEFAULT]

    def _environment(self, lang: str) -> Environment:
        env = Environment(
            loader=PackageLoader("parcelhook.panel", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
        )
        env.install_gettext_translations(self.translations[lang], newstyle=True)  # type: ignore[attr-defined]
        env.filters["when"] = present.when
        env.filters["breakable"] = present.breakable
        env.globals["version"] = __version__
        env.globals["lang"] = lang
        env.globals["languages"] = i18n.LANGUAGES
        return env

    def gettext(self, request: Request) -> i18n.Gettext:
        """This request's language's gettext, for words built in Python."""
        return self.translations[i18n.language_of(request)].gettext

    def ngettext(self, request: Request) -> i18n.Ngettext:
        return self.translations[i18n.language_of(request)].ngettext

    # -- sessions ---------------------------------------------------------------------

    def session(self, request: Request) -> Session:
        """This request's session; an anonymous one (with its CSRF token) when there is none."""
        cached = getattr(request.state, "panel_session", None)
        if isinstance(cached, Session):
            return cached
        session = self.codec.loads(request.cookies.get(COOKIE))
        if session is None:
            session = Session.fresh()
            request.state.panel_session_new = True
        request.state.panel_session = session
        return session

    def replace_session(self, request: Request, session: Session) -> None:
        request.state.panel_session = session
        request.state.panel_session_new = True

    def account_id(self, request: Request) -> int:
        account_id = self.session(request).account_id
        if account_id is None:
            raise SignInRequired
        return account_id

    async def checked_form(self, request: Request) -> FormData:
        """The POSTed form, once its `csrf_token` matches the session's (else a 403 page)."""
        form = await request.form()
        if not self.session(request).csrf_matches(form.get("csrf_token")):
            raise PageError(
                403,
                N_("This form has expired"),
                N_(
                    "The form did not carry this session's security token. It may be older "
                    "than your last sign-in. Go back, reload the page and try again."
                ),
            )
        return form

    def _finish(self, request: Request, response: Response) -> Response:
        response.headers.update(_SECURITY_HEADERS)
        if getattr(request.state, "panel_session_new", False):
            response.set_cookie(
                COOKIE,
                self.codec.dumps(self.session(request)),
                max_age=MAX_AGE_S,
                path="/",
                httponly=True,
                samesite="lax",
                secure=self.secure_cookies or request.url.scheme == "https",
            )
        return response

    # -- records, only ever through the signed-in account ------------------------------

    async def integration(self, account_id: int, integration_id: int) -> Integration:
        """The account's integration, or the 404 page (another account's looks the same)."""
        if integration_id > _MAX_ID:
            raise not_found()
        try:
            return await self.service.get_integration(account_id, integration_id)
        except NotFound:
            raise not_found() from None

    async def sender_address(self, account_id: int, sender_id: int) -> SenderAddress:
        """The account's sender address, or the 404 page (another account's looks the same)."""
        if sender_id > _MAX_ID:
            raise not_found()
        try:
            return await self.service.sender_address(account_id, sender_id)
        except NotFound:
            raise not_found() from None

    async def delivery(
        self, account_id: int, integration: Integration, delivery_id: int
    ) -> Delivery:
        """One delivery of `integration`, or the 404 page."""
        if delivery_id > _MAX_ID:
            raise not_found()
        try:
            found = await self.service.get_delivery(account_id, delivery_id)
        except NotFound:
            raise not_found() from None
        if found.integration_id != integration.id:
            raise not_found()
        return found

    # -- answers ----------------------------------------------------------------------

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        session = self.session(request)
        env = self.environments[i18n.language_of(request)]
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        html = env.get_template(template).render(
            csrf_token=session.csrf,
            signed_in=session.account_id is not None,
            here=here,
            **context,
        )
        return self._finish(request, HTMLResponse(html, status_code=status))

    def json(self, request: Request, body: dict[str, Any], status: int = 200) -> Response:
        return self._finish(request, JSONResponse(body, status_code=status))

    def redirect(self, request: Request, url: str) -> Response:
        return self._finish(request, RedirectResponse(url, status_code=303))

    async def verify_session(self, request: Request) -> None:
        """Turn a signed-in session whose account has since signed out (or changed its
        password, or gone) into an anonymous one: one indexed read per panel request."""
        session = self.session(request)
        if session.account_id is None:
            return
        current = await self.service.session_generation(session.account_id)
        if current != session.generation:
            self.replace_session(request, Session.fresh())

    async def sign_out(self, request: Request) -> Response:
        """End every session of the account (anonymous: only this one, at no cost)."""
        account_id = self.session(request).account_id
        if account_id is not None:
            await self.service.end_sessions(account_id)
        self.replace_session(request, Session.fresh())
        return self.redirect(request, "/login")


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def install_error_pages(app: FastAPI) -> None:
    """Panel failures as pages (the API keeps its JSON errors)."""

    def html_not_found(request: Request) -> Response:
        error = not_found()
        return panel_of(request).page(
            request, "error.html", 404, title=error.title, message=error.message
        )

    app.state.html_not_found = html_not_found

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        panel = panel_of(request)
        if wants_json(request):
            # the script shows the message in the page: in the reader's language too
            message = panel.gettext(request)(exc.message)
            body = {"error": {"code": f"http_{exc.status}", "message": message}}
            return panel.json(request, body, exc.status)
        return panel.page(request, "error.html", exc.status, title=exc.title, message=exc.message)

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, _exc: SignInRequired) -> Response:
        panel = panel_of(request)
        if wants_json(request):
            message = panel.gettext(request)(N_("Sign in again."))
            body = {"error": {"code": "unauthorized", "message": message}}
            return panel.json(request, body, 401)
        if request.method != "GET":
            return panel.redirect(request, "/login")
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return panel.redirect(request, "/login?next=" + quote(here, safe="/"))
