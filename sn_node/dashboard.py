"""The SN's live dashboard: one HTTPS page over the SN's read model, updated by server-sent events.

Served by Starlette on uvicorn, in its own thread and port, so a browser never
competes with SL nodes for the SN API's workers and never calls the ledger: every
byte comes from the read model's ``snapshot()`` (``sn_node.read_model``).

Access: the SN's own certificate serves HTTPS. A client passes with a certificate
issued by one of the swarm's CAs (the TLS layer verifies it, optional at the
handshake; the app refuses a request without one or with a revoked one), or with
the token printed at start: ``/?token=T`` sets an HttpOnly cookie and redirects
to ``/``. Anything else gets 401.

The page is self-contained (inline CSS, a small inline script drawing SVG
plots): no CDN, it works offline.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import uvicorn
from cryptography import x509
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from swarm.identity.certificates import identity_of

log = logging.getLogger("swarm.sn.dashboard")

COOKIE = "swarm_dashboard"
#: A snapshot is pushed when the model changed, and at least this often (waiting times move on),
#: but at most every MIN_PUSH_S: a round's check-ins, seal and merge then go out as one update
#: instead of each costing the SN a snapshot and its JSON per viewer.
PUSH_EVERY_S = 2.0
MIN_PUSH_S = 0.5
POLL_S = 0.1
MAX_CONNECTIONS = 32  # beyond it: 503


class SwarmView(Protocol):
    """What the dashboard reads: the SN read model (``sn_node.read_model.ReadModel``)."""

    @property
    def version(self) -> int: ...

    def snapshot(self) -> Any:  # a swarm.swarm_view.Snapshot (has .to_dict())
        ...


def snapshot_dict(view: SwarmView) -> dict:
    snap = view.snapshot()
    return snap.to_dict() if hasattr(snap, "to_dict") else dict(snap)


class _PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, handing the TLS client certificate (DER, verified by the
    handshake against the swarm's CAs) to the app as ``request.state.peer_cert``."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        # app_state is copied into each request's scope: a per-connection copy carries the cert.
        self.app_state = {**self.app_state, "peer_cert": der}


@dataclass(frozen=True)
class Access:
    """Who may see the dashboard."""

    token: str
    is_revoked: Callable[[str], bool] | None = None  # certificate fingerprint (hex) -> revoked

    def check(self, request: Request) -> str | None:
        """The reason to refuse ``request``, or None to serve it."""
        der = getattr(request.state, "peer_cert", None)
        if der:
            ident = identity_of(x509.load_der_x509_certificate(der))
            if self.is_revoked is not None and self.is_revoked(ident.fingerprint):
                return f"certificate of {ident.node_id} is revoked"
            return None
        offered = request.cookies.get(COOKIE) or request.query_params.get("token") or ""
        if offered and hmac.compare_digest(offered.encode(), self.token.encode()):
            return None
        if offered:
            return "wrong token"
        return ("present a client certificate issued by the swarm's CAs, or open the URL with the "
                "?token= the SN printed at start")


class _SharedSnapshot:
    """The latest snapshot's JSON, shared by every viewer: one snapshot per change, not per viewer."""

    def __init__(self, view: SwarmView, max_age_s: float):
        self._view = view
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._version = -1
        self._at = 0.0
        self._json = ""

    def get(self) -> tuple[int, str]:
        version, now = self._view.version, time.monotonic()
        with self._lock:
            if version != self._version or now - self._at >= self._max_age_s:
                self._json = json.dumps(snapshot_dict(self._view), separators=(",", ":"))
                self._version, self._at = version, now
            return self._version, self._json


def build_app(view: SwarmView, access: Access, *, push_every_s: float = PUSH_EVERY_S,
              min_push_s: float = MIN_PUSH_S) -> Starlette:
    shared = _SharedSnapshot(view, min_push_s)

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            # A certificate the SN has not seen may cost one ledger read: off the event loop.
            refusal = await run_in_threadpool(access.check, request)
            if refusal is not None:
                return PlainTextResponse(f"swarm dashboard: access refused: {refusal}\n", status_code=401)
            return await handler(request)
        return endpoint

    async def page(request: Request) -> Response:
        if "token" in request.query_params:
            # Trade the token in the URL for a cookie, and keep it out of the address bar.
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, request.query_params["token"], httponly=True, secure=True,
                                samesite="strict")
            return response
        _, data = await run_in_threadpool(shared.get)
        body = PAGE.replace("/*INITIAL*/null", data.replace("</", "<\\/"))
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    async def api_snapshot(request: Request) -> Response:
        _, data = await run_in_threadpool(shared.get)
        return Response(data, media_type="application/json", headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        async def stream():
            last_version, last_sent = -1, 0.0
            while True:
                now = time.monotonic()
                if now - last_sent >= min_push_s and (view.version != last_version
                                                      or now - last_sent >= push_every_s):
                    version, data = await run_in_threadpool(shared.get)
                    yield f"event: snapshot\nid: {version}\ndata: {data}\n\n"
                    last_version, last_sent = version, now
                if await request.is_disconnected():
                    return
                await asyncio.sleep(POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return Starlette(routes=[
        Route("/", guarded(page)),
        Route("/api/snapshot", guarded(api_snapshot)),
        Route("/events", guarded(events)),
    ])


class Dashboard:
    """The dashboard server on its own thread: ``start()``, ``url``, ``token``, ``stop()``."""

    def __init__(self, view: SwarmView, *, cert_file: str, key_file: str, ca_bundle_pem: bytes,
                 host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 is_revoked: Callable[[str], bool] | None = None):
        self.token = token or secrets.token_urlsafe(24)
        self.host = host
        self._access = Access(self.token, is_revoked)
        self._app = build_app(view, self._access)

        def ssl_context(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(cert_file, key_file)
            # Optional at the handshake (a browser with only the token has none); a certificate
            # that is offered must chain to the swarm's CAs, or the handshake fails.
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(cadata=ca_bundle_pem.decode("ascii"))
            return ctx

        self._config = uvicorn.Config(self._app, host=host, port=port, http=_PeerCertProtocol,
                                      ssl_certfile=cert_file, ssl_context_factory=ssl_context,
                                      log_level="warning", access_log=False, lifespan="off",
                                      # A few operators watch, not the world: bound what viewers cost.
                                      limit_concurrency=MAX_CONNECTIONS, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}/"

    @property
    def token_url(self) -> str:
        return f"{self.url}?token={self.token}"

    def start(self, timeout_s: float = 15.0) -> None:
        self._thread = threading.Thread(target=self._server.run, name="sn-dashboard", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the dashboard could not listen on {self.host}:{self.port or 'any port'}")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>swarm dashboard</title>
<link rel="icon" href="data:,">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
header{background:#1d2430;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}
#live{font-size:12px;padding:2px 8px;border-radius:9px;background:#555}
#live.on{background:#2e8b57}
main{display:grid;align-items:start;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px;padding:14px}
section{background:#fff;border-radius:6px;padding:10px 14px;box-shadow:0 1px 2px #0002}
h2{font-size:15px;margin:2px 0 8px}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{padding:3px 6px;text-align:left;border-bottom:1px solid #eee}
.ok{color:#2e8b57}.bad{color:#c0392b}.muted{color:#777}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:5px;background:#c0392b}
.dot.alive{background:#2e8b57}.dot.unknown{background:#bbb}
#events td:first-child{white-space:nowrap}
#current .big{font-size:22px;font-weight:600}
svg{width:100%;height:170px;background:#fbfbfc}
svg text{font-size:10px;fill:#555}
.legend span{margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:10px;height:3px;margin-right:4px;vertical-align:middle}
</style></head>
<body>
<header><h1>swarm</h1><span id="sn"></span><span id="session"></span><span id="live">connecting</span></header>
<main>
<section id="current"><h2>Round in progress</h2><div id="round-body"></div></section>
<section><h2>Members</h2><table id="members"><thead><tr><th>node</th><th>role</th><th>status</th>
<th>heartbeat</th><th>endpoint</th></tr></thead><tbody></tbody></table></section>
<section><h2>Round times (s)</h2><div id="times"></div></section>
<section><h2>Bytes per round</h2><div id="bytes"></div></section>
<section><h2>Merged model validation</h2><div id="metrics"></div></section>
<section><h2>Recent rounds</h2><table id="rounds"><thead><tr><th>round</th><th>state</th><th>participants</th>
<th>seal wait</th><th>merge</th><th>dropped / disagreed</th></tr></thead><tbody></tbody></table></section>
<section><h2>Ledger events</h2><table id="events"><tbody></tbody></table></section>
</main>
<script>
"use strict";
const COLORS=["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b"];
function esc(s){return String(s??"").replace(/[&<>"']/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]))}
function fmt(x,d=2){return x==null?"–":Number(x).toFixed(d)}
function bytes(n){if(n==null)return"–";const u=["B","KB","MB","GB"];let i=0;while(n>=1024&&i<3){n/=1024;i++}return n.toFixed(i?1:0)+" "+u[i]}
function median(a){a=a.filter(x=>x!=null).sort((x,y)=>x-y);if(!a.length)return null;const m=a.length>>1;return a.length%2?a[m]:(a[m-1]+a[m])/2}
function chart(el,series,yfmt){
  const pts=series.flatMap(s=>s.points);
  if(!pts.length){el.innerHTML='<p class="muted">no rounds yet</p>';return}
  const W=600,H=170,L=48,R=8,T=8,B=22;
  const xs=pts.map(p=>p[0]),ys=pts.map(p=>p[1]);
  const x0=Math.min(...xs),x1=Math.max(...xs,x0+1),y0=Math.min(0,...ys),y1=Math.max(...ys,y0+1e-9);
  const X=x=>L+(x-x0)/(x1-x0)*(W-L-R),Y=y=>H-B-(y-y0)/(y1-y0)*(H-T-B);
  let s=`<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img">`;
  for(let i=0;i<=4;i++){const y=y0+(y1-y0)*i/4;s+=`<line x1="${L}" x2="${W-R}" y1="${Y(y)}" y2="${Y(y)}" stroke="#e5e5e5"/><text x="2" y="${Y(y)+3}">${esc(yfmt(y))}</text>`}
  s+=`<text x="${L}" y="${H-6}">round ${x0}</text><text x="${W-R-60}" y="${H-6}">round ${x1}</text>`;
  series.forEach((se,i)=>{if(!se.points.length)return;const c=COLORS[i%COLORS.length];
    s+=`<polyline fill="none" stroke="${c}" stroke-width="2" points="${se.points.map(p=>X(p[0])+","+Y(p[1])).join(" ")}"/>`;
    se.points.forEach(p=>{s+=`<circle cx="${X(p[0])}" cy="${Y(p[1])}" r="2.5" fill="${c}"/>`})});
  s+="</svg>";
  s+='<div class="legend">'+series.map((se,i)=>`<span><i style="background:${COLORS[i%COLORS.length]}"></i>${esc(se.name)}</span>`).join("")+"</div>";
  el.innerHTML=s}
function metricSeries(rounds){
  // Validation metrics of the merged model, when SL nodes report them (a "metrics" map per report).
  const names=new Set();rounds.forEach(r=>(r.reports||[]).forEach(o=>Object.keys(o.metrics||{}).forEach(k=>names.add(k))));
  return[...names].map(k=>({name:k+" (median over nodes)",points:rounds.map(r=>[r.round,median((r.reports||[]).map(o=>(o.metrics||{})[k]))]).filter(p=>p[1]!=null)}))}
function render(s){
  document.getElementById("sn").textContent=`${s.sn_node_id}${s.sentinel?" (sentinel)":""} · ledger ${s.ledger_kind} · block ${s.block_number}`;
  const se=s.session||{};
  document.getElementById("session").textContent=se.configured?`min peers ${se.min_peers} · finished ${se.finished_count}${se.swarm_done?" · swarm done":""}`:"session not configured yet";
  const c=s.current,rb=document.getElementById("round-body");
  if(c){rb.innerHTML=`<div class="big" id="current-round">round ${c.round}</div>
    <div>checked in: <b>${esc(c.checked_in.join(", ")||"nobody yet")}</b></div>
    <div>waiting for: <b class="${c.missing.length?"bad":"ok"}" id="waiting-for">${esc(c.missing.join(", ")||"nobody")}</b>
    ${c.short_by?` · ${c.short_by} more check-in(s) to reach min peers`:""}
    ${c.waiting_s!=null?` · for ${fmt(c.waiting_s,1)} s`:""}</div>`}
  else rb.innerHTML=`<div class="big" id="current-round">${se.swarm_done?"swarm done":"no round open"}</div><div class="muted">last sealed round ${s.last_sealed_round}, last merged ${s.latest_merged_round}</div>`;
  document.querySelector("#members tbody").innerHTML=(s.members||[]).map(m=>`<tr data-node="${esc(m.node_id)}"><td><span class="dot ${m.alive?"alive":m.heartbeat_age_s==null&&m.role!=="sl"?"unknown":""}" title="${m.alive?"alive":"no heartbeat here"}"></span>${esc(m.node_id)}${m.finished?' <span class="muted">finished</span>':""}</td><td>${esc(m.role)}</td><td class="${m.status==="active"?"ok":"bad"}">${esc(m.status)}</td><td>${m.heartbeat_age_s==null?"–":fmt(m.heartbeat_age_s,1)+" s ago"}</td><td class="muted">${esc(m.endpoint)}</td></tr>`).join("");
  const rounds=s.rounds||[];
  chart(document.getElementById("times"),[
    {name:"check-in to seal",points:rounds.filter(r=>r.seal_wait_s!=null).map(r=>[r.round,r.seal_wait_s])},
    {name:"seal to merged",points:rounds.filter(r=>r.merge_s!=null).map(r=>[r.round,r.merge_s])},
    {name:"round at nodes (median)",points:rounds.map(r=>[r.round,median((r.reports||[]).map(o=>o.round_s))]).filter(p=>p[1]!=null)}],y=>fmt(y,2));
  chart(document.getElementById("bytes"),[
    {name:"sent",points:rounds.filter(r=>r.reports&&r.reports.length).map(r=>[r.round,r.bytes_sent])},
    {name:"received",points:rounds.filter(r=>r.reports&&r.reports.length).map(r=>[r.round,r.bytes_received])}],bytes);
  const ms=metricSeries(rounds);
  if(ms.length)chart(document.getElementById("metrics"),ms,y=>fmt(y,3));
  else document.getElementById("metrics").innerHTML='<p class="muted">no validation metrics reported yet</p>';
  document.querySelector("#rounds tbody").innerHTML=rounds.slice(-8).reverse().map(r=>`<tr><td>${r.round}</td><td>${esc(r.state)}</td><td>${esc((r.participants.length?r.participants:r.checked_in).join(", "))}</td><td>${fmt(r.seal_wait_s)}</td><td>${fmt(r.merge_s)}</td><td class="bad">${esc([...Object.keys(r.dropped||{}),...(r.disagreed||[])].join(", "))}</td></tr>`).join("");
  document.querySelector("#events tbody").innerHTML=(s.events||[]).slice(-25).reverse().map(e=>`<tr><td class="muted">${new Date(e.at*1000).toLocaleTimeString()}</td><td>${esc(e.kind)}</td><td>${e.round??""}</td><td>${esc(e.node_id)}</td><td class="muted">${esc(e.detail)}</td></tr>`).join("");
  document.body.dataset.version=s.version}
const initial=/*INITIAL*/null;
if(initial)render(initial);
const live=document.getElementById("live");
const es=new EventSource("/events");
es.addEventListener("snapshot",ev=>{live.textContent="live";live.className="on";render(JSON.parse(ev.data))});
es.onerror=()=>{live.textContent="reconnecting";live.className=""};
</script></body></html>
"""


DASHBOARD_LINE = "Dashboard: {url}"


def serve_dashboard(node, host: str, port: int, cert_file: str, key_file: str) -> Dashboard:
    """Starts the dashboard of a started SwarmNetworkNode on its read model (``node.view``)."""
    view = getattr(node, "view", None)
    if view is None:
        raise OSError("this SN has no read model to show")
    board = Dashboard(view, cert_file=cert_file, key_file=key_file, ca_bundle_pem=node.tls.ca_bundle_pem,
                      host=host, port=port, is_revoked=node.loop.directory.is_revoked)
    board.start()
    log.info("dashboard on %s", board.url)
    return board
