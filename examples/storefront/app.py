"""A demo agency storefront (fishing licences) that takes card payments through cardvault.

It exists to show, end to end, what an agency's own web app does and does not do: its backend
prices each order and creates a checkout session with its *secret* key; its page includes the
vault's drop-in script (pinned by its Subresource Integrity hash) and mounts the hosted card
fields with its *publishable* key; the card goes from the shopper's browser straight to the
vault. This app never sees a card number: it keeps, per order, only the checkout session, the
token-free receipt (brand, last four) and the vault's charge id, in a JSON file or in memory.

It does not import cardvault: it talks to the vault only over HTTP, as any agency's app would.

    python examples/storefront/app.py --vault https://127.0.0.1:8443 --vault-ca var/tls/dev-cert.pem \\
        --publishable-key pk_... --secret-key sk_...
    python examples/storefront/app.py --demo-agency var/demo-agency.json --vault-ca var/tls/dev-cert.pem
    python examples/storefront/app.py --serve-vault     # also runs `cardvault serve` and uses its demo agency
"""

from __future__ import annotations

import argparse
import html
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

HERE = Path(__file__).resolve().parent
CATALOG = {
    "annual-resident": ("Annual fishing licence (resident)", 2500),
    "three-day-visitor": ("Three-day fishing licence (visitor)", 1500),
    "trout-stamp": ("Trout stamp", 1000),
}


@dataclass(frozen=True)
class Config:
    vault_url: str
    publishable_key: str
    secret_key: str
    public_url: str  # this storefront's own origin, for the return URLs
    vault_ca: Path | None = None
    store_file: Path | None = None
    cardvault_sri: str | None = None  # pinned SRI of cardvault.js; None: read once from the vault at start

    @property
    def vault_origin(self) -> str:
        parts = urlsplit(self.vault_url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass
class Orders:
    """The storefront's own tiny store: orders with their session, never card data."""

    path: Path | None = None
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.path is not None and self.path.exists():
            self.orders = json.loads(self.path.read_text(encoding="utf-8"))

    def save(self, order_id: str, order: dict[str, Any]) -> None:
        self.orders[order_id] = order
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.orders, indent=1), encoding="utf-8")
            tmp.replace(self.path)


CONFIG = web.AppKey("config", Config)
ORDERS = web.AppKey("orders", Orders)
VAULT = web.AppKey("vault", aiohttp.ClientSession)
SRI = web.AppKey("sri", str)


def money(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def page(request: web.Request, title: str, body: str, *, scripts: str = "") -> web.Response:
    config = request.app[CONFIG]
    vault = config.vault_origin
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · Fish &amp; Wildlife licences</title><link rel="stylesheet" href="/static/shop.css">
</head><body><header><a href="/">Fish &amp; Wildlife licences</a> <span class="demo">demo storefront</span></header>
<main>{body}</main>{scripts}</body></html>"""
    response = web.Response(text=document, content_type="text/html")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; script-src 'self' {vault}; frame-src {vault}; connect-src 'self'; "
        "style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def vault_call(app: web.Application, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    config = app[CONFIG]
    headers = {"Authorization": f"Bearer {config.secret_key}", **kwargs.pop("headers", {})}
    async with app[VAULT].request(method, config.vault_url + path, headers=headers, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def catalog(request: web.Request) -> web.Response:
    items = "".join(
        f'<li><form method="post" action="/orders"><input type="hidden" name="item" value="{key}">'
        f"<span>{html.escape(name)}</span> <strong>{money(price)}</strong> "
        f'<button type="submit">Buy</button></form></li>'
        for key, (name, price) in CATALOG.items()
    )
    return page(request, "Licences", f"<h1>Buy a fishing licence</h1><ul class='catalog'>{items}</ul>")


async def create_order(request: web.Request) -> web.Response:
    form = await request.post()
    item = str(form.get("item", ""))
    if item not in CATALOG:
        raise web.HTTPBadRequest(text="no such licence")
    name, amount = CATALOG[item]  # the price comes from the catalog here, never from the browser
    order_id = "FL-" + secrets.token_hex(6).upper()
    base = request.app[CONFIG].public_url
    status, session = await vault_call(
        request.app,
        "POST",
        "/v1/checkout/sessions",
        json={
            "amount": amount,
            "currency": "usd",
            "order_reference": order_id,
            "description": name,
            "success_url": f"{base}/orders/{order_id}/done",
            "cancel_url": f"{base}/",
        },
        headers={"Idempotency-Key": f"order-{order_id}"},
    )
    if status != 201:
        raise web.HTTPBadGateway(text=f"the vault refused the checkout session: {session.get('code')}")
    order = {"item": item, "amount": amount, "session_id": session["id"], "client_secret": session["client_secret"]}
    request.app[ORDERS].save(order_id, {**order, "status": "awaiting_payment", "charge_id": None, "receipt": None})
    raise web.HTTPSeeOther(f"/orders/{order_id}")


def _order(request: web.Request) -> tuple[str, dict[str, Any]]:
    order_id = request.match_info["order_id"]
    order = request.app[ORDERS].orders.get(order_id)
    if order is None:
        raise web.HTTPNotFound(text="no such order")
    return order_id, order


async def checkout_page(request: web.Request) -> web.Response:
    order_id, order = _order(request)
    config = request.app[CONFIG]
    name, _ = CATALOG[order["item"]]
    body = f"""<h1>Checkout</h1>
<section id="checkout" data-publishable-key="{html.escape(config.publishable_key)}"
 data-client-secret="{html.escape(order["client_secret"])}">
<p class="summary">{html.escape(name)} · order <code>{html.escape(order_id)}</code> ·
<strong id="amount">{money(order["amount"])}</strong></p>
<div id="card-fields" class="card-fields"></div>
<p id="card-brand" class="brand" aria-live="polite"></p>
<button id="pay-button" type="button" disabled>Pay {money(order["amount"])}</button>
<p id="pay-status" class="status" role="status" aria-live="polite"></p>
</section>"""
    scripts = (
        f'<script src="{config.vault_origin}/elements/v1/cardvault.js" integrity="{request.app[SRI]}" '
        'crossorigin="anonymous"></script><script src="/static/checkout.js"></script>'
    )
    return page(request, "Checkout", body, scripts=scripts)


async def done_page(request: web.Request) -> web.Response:
    """The success URL: the backend asks the vault (secret key) and records the charge id; it never trusts the page."""
    order_id, order = _order(request)
    status, session = await vault_call(request.app, "GET", f"/v1/checkout/sessions/{order['session_id']}")
    if status != 200 or session["status"] != "complete":
        raise web.HTTPSeeOther(f"/orders/{order_id}")
    charge = session["charge"]
    receipt = {"brand": charge["card"]["brand"], "last4": charge["card"]["last4"]}
    request.app[ORDERS].save(order_id, {**order, "status": "paid", "charge_id": charge["id"], "receipt": receipt})
    name, _ = CATALOG[order["item"]]
    body = f"""<h1 id="result">Payment received</h1>
<p>{html.escape(name)}: paid {money(session["amount"])} with {html.escape(receipt["brand"].title())} ending
{html.escape(receipt["last4"])}.</p><p>Order <code>{html.escape(order_id)}</code>. Your licence is on its way.</p>"""
    return page(request, "Paid", body)


def make_app(config: Config, *, vault_ssl: ssl.SSLContext | bool | None = None) -> web.Application:
    app = web.Application()
    app[CONFIG] = config
    app[ORDERS] = Orders(config.store_file)

    async def vault_client(app: web.Application) -> Any:
        context: ssl.SSLContext | bool | None = vault_ssl
        if context is None and config.vault_ca is not None:
            context = ssl.create_default_context(cafile=str(config.vault_ca))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context or True)) as session:
            app[VAULT] = session
            if config.cardvault_sri is not None:
                app[SRI] = config.cardvault_sri
            else:
                async with session.get(config.vault_origin + "/elements/v1/cardvault.js.sri") as resp:
                    app[SRI] = (await resp.text()).strip()
            yield

    app.cleanup_ctx.append(vault_client)
    app.router.add_get("/", catalog)
    app.router.add_post("/orders", create_order)
    app.router.add_get("/orders/{order_id}", checkout_page)
    app.router.add_get("/orders/{order_id}/done", done_page)
    app.router.add_static("/static", HERE / "static")
    return app


def serve_vault(data_dir: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Start `cardvault serve` (HTTPS on 127.0.0.1:8443) and wait for its demo agency's keys."""
    vault = subprocess.Popen([sys.executable, "-m", "service", "serve", "--data-dir", str(data_dir)])  # noqa: S603
    keys_file = data_dir / "demo-agency.json"
    context = ssl.create_default_context()
    for _ in range(300):
        cert = data_dir / "tls" / "dev-cert.pem"
        if keys_file.exists() and cert.exists():
            context.load_verify_locations(cafile=str(cert))
            try:
                urllib.request.urlopen("https://127.0.0.1:8443/healthz", context=context, timeout=1)
                return vault, json.loads(keys_file.read_text(encoding="utf-8"))
            except OSError:
                pass
        if vault.poll() is not None:
            raise SystemExit("cardvault serve stopped; see its output above")
        time.sleep(0.2)
    vault.terminate()
    raise SystemExit("cardvault serve did not become ready in 60 seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description="A demo fishing-licence storefront paying through cardvault.")
    parser.add_argument("--vault", default="https://127.0.0.1:8443", help="the vault's base URL")
    parser.add_argument("--vault-ca", type=Path, help="PEM CA to trust for the vault (e.g. var/tls/dev-cert.pem)")
    parser.add_argument("--publishable-key", default=os.environ.get("STOREFRONT_PUBLISHABLE_KEY"))
    parser.add_argument("--secret-key", default=os.environ.get("STOREFRONT_SECRET_KEY"))
    parser.add_argument("--demo-agency", type=Path, help="read both keys from cardvault's var/demo-agency.json")
    parser.add_argument("--serve-vault", action="store_true", help="also run `cardvault serve` with --data-dir var")
    parser.add_argument("--data-dir", type=Path, default=Path("var"), help="the vault's data dir for --serve-vault")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", type=Path, default=Path("var/storefront-orders.json"), help="the orders file")
    args = parser.parse_args()
    vault_process = None
    if args.serve_vault:
        vault_process, keys = serve_vault(args.data_dir)
        args.publishable_key, args.secret_key = keys["publishable_key"], keys["secret_key"]
        args.vault_ca = args.vault_ca or args.data_dir / "tls" / "dev-cert.pem"
    elif args.demo_agency is not None:
        keys = json.loads(args.demo_agency.read_text(encoding="utf-8"))
        args.publishable_key, args.secret_key = keys["publishable_key"], keys["secret_key"]
    if not (args.publishable_key and args.secret_key):
        parser.error("give --publishable-key and --secret-key, --demo-agency FILE, or --serve-vault")
    args.store.parent.mkdir(parents=True, exist_ok=True)
    config = Config(
        vault_url=args.vault.rstrip("/"),
        publishable_key=args.publishable_key,
        secret_key=args.secret_key,
        public_url=f"http://{args.host}:{args.port}",
        vault_ca=args.vault_ca,
        store_file=args.store,
    )
    print(f"storefront on {config.public_url} paying through {config.vault_url}", flush=True)
    try:
        web.run_app(make_app(config), host=args.host, port=args.port, print=None)
    finally:
        if vault_process is not None:
            vault_process.terminate()
            vault_process.wait(timeout=20)


if __name__ == "__main__":
    main()
