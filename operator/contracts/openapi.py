"""OpenAPI 3.1 description of the storefront's JSON APIs, generated from the contract models.

One home: the paths, headers and bodies come from :mod:`kameng.contracts.hq_api` and
:mod:`kameng.contracts.pod`, so the description cannot drift from what the code sends and
accepts. It covers HQ's sub-site API (``/api/v1/...``), the sub-site's payment notification
endpoint, and the probes and metrics of the ops port. ``kameng openapi`` is not needed: the
document is committed as ``docs/openapi.json`` and a test keeps it fresh; the fuzz tests
(schemathesis) read it from here.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import models_json_schema

from . import hq_api, pod
from .hq_api import (
    ApiError,
    ApprovalList,
    ApprovalView,
    Catalog,
    ChangeRequest,
    DecisionRequest,
    Fulfilment,
    FulfilRequest,
    KpiReport,
    PaymentCreated,
    PaymentNotification,
    PaymentRequest,
    SettlementView,
    TicketCreate,
    TicketList,
    TicketReply,
    TicketView,
)

_REF = "#/components/schemas/{model}"
_MODELS = (ApiError, Catalog, Fulfilment, FulfilRequest, PaymentCreated, PaymentNotification,
           PaymentRequest, SettlementView, ApprovalList, ApprovalView, ChangeRequest,
           DecisionRequest, TicketCreate, TicketList, TicketReply, TicketView, KpiReport)


def _ref(model: type) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    what = {400: "malformed request", 401: "unknown site or bad token",
            403: "license does not allow it", 404: "no such object",
            409: "conflict (out of stock, amount mismatch, not refundable)",
            413: "request body too large"}
    return {str(c): _json(ApiError, what[c]) for c in codes}


def _header(name: str, description: str, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": {"type": "string", "maxLength": 4096}}


_SITE_AUTH = [
    _header(hq_api.SITE_HEADER, "the calling sub-site's name"),
    _header(hq_api.LICENSE_HEADER, "the site's current signed license token", required=False),
]


_TID = {"name": "tid", "in": "path", "required": True,
        "schema": {"type": "integer", "minimum": 1}}


def document(hq_url: str = "", shop_url: str = "", ops_url: str = "") -> dict[str, Any]:
    """The OpenAPI document; the URLs fill in the ``servers`` of each part."""
    _, defs = models_json_schema([(m, "validation") for m in _MODELS], ref_template=_REF)
    schemas = defs.get("$defs", {})
    hq = [{"url": hq_url or "/", "description": "HQ"}]
    shop = [{"url": shop_url or "/", "description": "a sub-site"}]
    ops = [{"url": ops_url or "/", "description": "ops port (never public)"}]
    site_post = {"security": [{"siteToken": []}], "parameters": _SITE_AUTH}
    paths: dict[str, Any] = {
        hq_api.CATALOG_PATH: {"servers": hq, "get": {
            "operationId": "hqCatalog", "summary": "HQ's catalogue as the site may see it",
            "security": [{"siteToken": []}], "parameters": [
                *_SITE_AUTH, _header("If-None-Match", "ETag of a copy held", required=False)],
            "responses": {"200": _json(Catalog, "the catalogue"),
                          "304": {"description": "unchanged since If-None-Match"},
                          **_errors(400, 401)}}},
        hq_api.FULFIL_PATH: {"servers": hq, "post": {
            "operationId": "hqFulfil", "summary": "hand out a card key for a paid order",
            **site_post, "requestBody": {"required": True, **_json(FulfilRequest, "order")},
            "responses": {"200": _json(Fulfilment, "the key"),
                          **_errors(400, 401, 403, 404, 409, 413)}}},
        hq_api.PAYMENTS_PATH: {"servers": hq, "post": {
            "operationId": "hqCreatePayment", "summary": "open a payment for an order",
            **site_post, "requestBody": {"required": True, **_json(PaymentRequest, "payment")},
            "responses": {"200": _json(PaymentCreated, "where the buyer pays"),
                          **_errors(400, 401, 403, 409, 413)}}},
        hq_api.REFUND_PATH: {"servers": hq, "post": {
            "operationId": "hqRefund", "summary": "refund a payment",
            **site_post,
            "parameters": [*_SITE_AUTH, {"name": "pid", "in": "path", "required": True,
                                         "schema": {"type": "string", "maxLength": 64}}],
            "responses": {"200": {"description": "refunded"},
                          **_errors(400, 401, 404, 409, 413)}}},
        hq_api.SETTLEMENT_PATH: {"servers": hq, "get": {
            "operationId": "hqSettlement",
            "summary": "the site's available balance, withdrawal outcomes and statements",
            "security": [{"siteToken": []}], "parameters": _SITE_AUTH,
            "responses": {"200": _json(SettlementView, "the site's money at HQ"),
                          **_errors(400, 401)}}},
        hq_api.STATEMENT_CSV_PATH: {"servers": hq, "get": {
            "operationId": "hqStatementCsv", "summary": "one closed statement as CSV",
            "security": [{"siteToken": []}],
            "parameters": [*_SITE_AUTH, {"name": "period", "in": "path", "required": True,
                                         "schema": {"type": "string", "format": "date"}}],
            "responses": {"200": {"description": "the statement",
                                  "content": {"text/csv": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 404)}}},
        hq_api.APPROVALS_PATH: {"servers": hq, "post": {
            "operationId": "hqRequestChange",
            "summary": "ask HQ for a change of the site's SubSite (waits for approval where "
                       "the RolePolicy says so)",
            **site_post, "requestBody": {"required": True, **_json(ChangeRequest, "change")},
            "responses": {"200": _json(ApprovalView, "the request (the first one for a "
                                       "request_key seen before)"),
                          **_errors(400, 401, 403, 413)}}, "get": {
            "operationId": "hqChangeRequests", "summary": "the site's change requests",
            "security": [{"siteToken": []}], "parameters": _SITE_AUTH,
            "responses": {"200": _json(ApprovalList, "newest first, pending first"),
                          **_errors(400, 401)}}},
        hq_api.ADMIN_APPROVALS_PATH: {"servers": hq, "get": {
            "operationId": "hqAdminApprovals",
            "summary": "every site's change requests (kubectl kameng approvals)",
            "parameters": [_header(hq_api.ADMIN_TOKEN_HEADER, "HQ's admin API token"),
                           {"name": "status", "in": "query", "required": False,
                            "schema": {"type": "string"}},
                           {"name": "site", "in": "query", "required": False,
                            "schema": {"type": "string"}}],
            "responses": {"200": _json(ApprovalList, "the requests"), **_errors(401)}}},
        hq_api.ADMIN_DECISION_PATH: {"servers": hq, "post": {
            "operationId": "hqAdminDecide",
            "summary": "approve (HQ applies the change) or reject a change request",
            "parameters": [_header(hq_api.ADMIN_TOKEN_HEADER, "HQ's admin API token"),
                           {"name": "rid", "in": "path", "required": True,
                            "schema": {"type": "string", "maxLength": 40}},
                           {"name": "decision", "in": "path", "required": True,
                            "schema": {"enum": ["approve", "reject"]}}],
            "requestBody": {"required": True, **_json(DecisionRequest, "who and why")},
            "responses": {"200": _json(ApprovalView, "the request as decided"),
                          **_errors(400, 401, 409, 413)}}},
        hq_api.TICKETS_PATH: {"servers": hq, "get": {
            "operationId": "hqTickets", "summary": "the site's support tickets",
            "security": [{"siteToken": []}], "parameters": _SITE_AUTH,
            "responses": {"200": _json(TicketList, "the site's tickets, newest first"),
                          **_errors(400, 401)}}, "post": {
            "operationId": "hqOpenTicket",
            "summary": "open a ticket (routed by category to an HQ team)",
            **site_post, "requestBody": {"required": True, **_json(TicketCreate, "ticket")},
            "responses": {"201": _json(TicketView, "the ticket with its thread"),
                          **_errors(400, 401, 413)}}},
        hq_api.TICKET_PATH: {"servers": hq, "get": {
            "operationId": "hqTicket", "summary": "one of the site's tickets with its thread",
            "security": [{"siteToken": []}], "parameters": [*_SITE_AUTH, _TID],
            "responses": {"200": _json(TicketView, "the ticket"),
                          **_errors(400, 401, 404)}}},
        hq_api.TICKET_MESSAGES_PATH: {"servers": hq, "post": {
            "operationId": "hqTicketReply", "summary": "the site adds to its ticket",
            **site_post, "parameters": [*_SITE_AUTH, _TID],
            "requestBody": {"required": True, **_json(TicketReply, "reply")},
            "responses": {"200": {"description": "added; the ticket is open"},
                          **_errors(400, 401, 404, 413)}}},
        hq_api.TICKET_ATTACHMENT_PATH: {"servers": hq, "get": {
            "operationId": "hqTicketAttachment", "summary": "one attachment of the site's ticket",
            "security": [{"siteToken": []}], "parameters": [
                *_SITE_AUTH, _TID, {"name": "aid", "in": "path", "required": True,
                                    "schema": {"type": "integer", "minimum": 1}}],
            "responses": {"200": {"description": "the file (always a download)",
                                  "content": {"application/octet-stream": {
                                      "schema": {"type": "string"}}}},
                          **_errors(400, 401, 404)}}},
        hq_api.KPI_REPORT_PATH: {"servers": hq, "post": {
            "operationId": "hqKpiReport",
            "summary": "what only the shop counts (visits, customers, complaints) per day",
            **site_post, "requestBody": {"required": True, **_json(KpiReport, "report")},
            "responses": {"200": {"description": "stored"}, **_errors(400, 401, 413)}}},
        hq_api.NOTIFY_PATH: {"servers": shop, "post": {
            "operationId": "shopPaymentNotify",
            "summary": "HQ's signed payment notification (HMAC over timestamp and body)",
            "parameters": [
                _header(hq_api.TIMESTAMP_HEADER, "Unix time of signing"),
                _header(hq_api.SIGNATURE_HEADER, "v1=<hex HMAC-SHA256>")],
            "requestBody": {"required": True,
                            **_json(PaymentNotification, "the notification")},
            "responses": {"200": {"description": "recorded (or already known)"},
                          **_errors(400, 401, 409, 413)}}},
        pod.HEALTHZ_PATH: {"servers": ops, "get": {
            "operationId": "healthz", "summary": "liveness",
            "responses": {"200": {"description": "alive"}}}},
        pod.READYZ_PATH: {"servers": ops, "get": {
            "operationId": "readyz", "summary": "readiness: database and Redis reachable",
            "responses": {"200": {"description": "ready"},
                          "503": {"description": "a dependency is unreachable"}}}},
        pod.METRICS_PATH: {"servers": ops, "get": {
            "operationId": "metrics", "summary": "Prometheus metrics",
            "responses": {"200": {"description": "text exposition format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kameng storefront JSON APIs", "version": "v1",
                 "description": "Generated from kameng.contracts; do not edit by hand."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"siteToken": {
                "type": "http", "scheme": "bearer",
                "description": "the per-site API token (Secret storefront-keys)"}},
        },
    }


def render() -> str:
    """The committed form (``docs/openapi.json``)."""
    return json.dumps(document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
