"""Handlers: tokens, who-am-I, health, metrics, the OpenAPI document."""

from __future__ import annotations

from importlib import resources

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from callhome_mux.api.context import APIContext
from callhome_mux.api.errors import APIError, bad_request, not_found
from callhome_mux.api.routing import Call, Raw
from callhome_mux.api.tokens import check_labels, check_role


def openapi_document() -> bytes:
    """The OpenAPI document shipped in the package (docs/openapi.json is a copy)."""
    return resources.files("callhome_mux.api").joinpath("openapi.json").read_bytes()


class AdminHandlers:
    def __init__(self, ctx: APIContext):
        self.ctx = ctx

    def healthz(self, call: Call):
        return {"status": "ok"}

    def whoami(self, call: Call):
        return call.principal.fields()

    def metrics(self, call: Call):
        return Raw(200, generate_latest(self.ctx.metrics.registry), CONTENT_TYPE_LATEST)

    def openapi(self, call: Call):
        try:
            document = openapi_document()
        except OSError:
            # Package data not installed (setup.cfg needs [options.package_data]).
            raise APIError(500, "openapi.json is missing from this installation of callhome_mux.api") from None
        return Raw(200, document, "application/json")

    # -- tokens ------------------------------------------------------------------

    def list_tokens(self, call: Call):
        return {"tokens": [stored.principal().fields() | {"created": stored.created} for stored in self.ctx.tokens.tokens()]}

    def add_token(self, call: Call):
        body = call.json_object()
        unknown = sorted(set(body) - {"role", "labels", "name"})
        if unknown:
            raise bad_request(f"unknown field(s): {', '.join(unknown)} (a token has role, labels, name)")
        name = body.get("name", "")
        if not isinstance(name, str):
            raise bad_request("name must be a string")
        try:
            role = check_role(body.get("role"))
            labels = check_labels(body.get("labels"))
        except ValueError as error:
            raise bad_request(str(error)) from None
        token, stored = self.ctx.tokens.add(role, labels, name)
        self.ctx.service.events.emit(
            "api.token.added", token_id=stored.id, role=role, labels=dict(labels), by=call.principal.token_id
        )
        # The only time the token itself is shown.
        return 201, {**stored.principal().fields(), "created": stored.created, "secret": token}

    def remove_token(self, call: Call):
        token_id = call.params["token_id"]
        if not self.ctx.tokens.remove(token_id):
            raise not_found(f"token {token_id!r}")
        self.ctx.service.events.emit("api.token.removed", token_id=token_id, by=call.principal.token_id)
        return 204, None
