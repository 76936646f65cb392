// What another program on the machine, or a web page the person visits, can try against
// the app: every one is refused.
import { request as http } from "node:http";
import { expect, test } from "@playwright/test";
import { startApp, stopAll } from "./harness";
import type { App } from "./harness";

let app: App;
let cookie: string;
let token: string;

/** A raw HTTP request, so the Host and Origin headers are exactly what a test says. */
function raw(
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const url = new URL(app.origin);
  return new Promise((ok, fail) => {
    const req = http(
      { host: url.hostname, port: url.port, path, method: options.method ?? "GET", headers: options.headers },
      (res) => {
        let body = "";
        res.on("data", (d) => (body += String(d)));
        res.on("end", () => ok({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    // A WebSocket that opens answers 101, which node reports apart from other answers.
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      ok({ status: res.statusCode ?? 0, headers: res.headers, body: "" });
    });
    req.on("error", fail);
    req.end(options.body);
  });
}

test.beforeAll(async () => {
  app = await startApp();
  const opened = await raw(new URL(app.url).pathname + new URL(app.url).search);
  expect(opened.status).toBe(303);
  const set = String(opened.headers["set-cookie"]);
  expect(set).toContain("HttpOnly");
  expect(set).toContain("SameSite=Strict");
  cookie = set.split(";")[0];
  // The session's token comes in the fragment, for the page's own storage only.
  const to = String(opened.headers.location);
  expect(to).toMatch(/^\/#session=[0-9a-f]{64}$/);
  token = to.split("=")[1];
});

test.afterAll(() => stopAll());

test("without the secret, nothing is served", async () => {
  for (const path of ["/", "/app.js", "/api/me", "/api/chats"]) {
    const r = await raw(path);
    expect(r.status, path).toBe(401);
    expect(r.body).not.toContain("<script");
  }
  expect((await raw("/open?key=wrong")).status).toBe(403);
  expect((await raw("/", { headers: { cookie: "kith_app_1=forged" } })).status).toBe(401);
  // A person who lands on the page without a session is told what to do, in words.
  const page = await raw("/");
  expect(String(page.headers["content-type"])).toContain("text/html");
  expect(page.body).toContain("kith app");
  // A call is told in JSON, with a code.
  expect(JSON.parse((await raw("/api/me")).body).error.code).toBe("no_session");
  expect((await raw("/open")).status).toBe(403);
});

test("the cookie alone opens no call: cookies are shared by every port of 127.0.0.1", async () => {
  // What another server on this machine would get from the browser: the cookie, not the token.
  expect((await raw("/api/me", { headers: { cookie } })).status).toBe(401);
  expect((await raw("/api/me", { headers: { cookie, "x-kith-session": "0".repeat(64) } })).status).toBe(401);
  expect((await raw("/api/me", { headers: { "x-kith-session": token } })).status).toBe(401);
  expect((await raw("/api/me", { headers: { cookie, "x-kith-session": token } })).status).toBe(200);
  // The live channel wants it too.
  const upgrade = { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", origin: app.origin };
  expect((await raw("/live", { headers: { cookie, ...upgrade } })).status).toBe(401);
  expect((await raw(`/live?session=${token}`, { headers: { cookie, ...upgrade } })).status).toBe(101);
  // The page's files are not secret, and need only the cookie.
  expect((await raw("/app.js", { headers: { cookie } })).status).toBe(200);
});

test("a malformed call gets a JSON error with a code, never a plain-text one", async () => {
  const headers = { cookie, "x-kith-session": token, origin: app.origin };
  const cases: [string, { method?: string; headers?: Record<string, string>; body?: string }, number, string][] = [
    ["/api/send", { method: "POST", headers: { ...headers, "content-type": "text/plain" }, body: "hi" }, 415, "not_json"],
    ["/api/send", { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: "{" }, 400, "bad_request"],
    ["/api/send", { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: "{}" }, 422, "bad_request"],
    ["/api/send", { method: "GET", headers }, 405, "wrong_method"],
    ["/api/nothing", { headers }, 404, "not_found"],
    ["/api/chats/%40/messages", { headers }, 422, "no_such_conversation"],
    ["/api/chats/%FF/read", { method: "POST", headers }, 400, "bad_request"],
  ];
  for (const [path, options, status, code] of cases) {
    const r = await raw(path, options);
    expect(r.status, path).toBe(status);
    expect(String(r.headers["content-type"]), path).toContain("application/json");
    expect(JSON.parse(r.body).error.code, path).toBe(code);
  }
  // Too large (node's own client stops at the closed connection before it reads the answer).
  const big = await fetch(`${app.origin}/api/send`, {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body: JSON.stringify({ chat: "@bob", text: "x".repeat(3 << 20) }),
  });
  expect(big.status).toBe(413);
  expect((await big.json()).error.code).toBe("too_large");
});

test("a wrong Host is refused (DNS rebinding)", async () => {
  const session = { cookie, "x-kith-session": token };
  const r = await raw("/api/me", { headers: { ...session, host: `attacker.example:${new URL(app.origin).port}` } });
  expect(r.status).toBe(421);
  expect(JSON.parse(r.body).error.code).toBe("wrong_host");
  const ok = await raw("/api/me", { headers: session });
  expect(ok.status).toBe(200);
});

test("a send from another origin is refused", async () => {
  const body = JSON.stringify({ chat: "@bob", text: "forged" });
  const json = { cookie, "x-kith-session": token, "content-type": "application/json" };
  for (const origin of ["http://evil.example", "null", "http://localhost:1"]) {
    const r = await raw("/api/send", { method: "POST", body, headers: { ...json, origin } });
    expect(r.status, origin).toBe(403);
  }
  const none = await raw("/api/send", { method: "POST", body, headers: json });
  expect(none.status).toBe(403);
  const crossSite = await raw("/api/send", {
    method: "POST",
    body,
    headers: { ...json, origin: app.origin, "sec-fetch-site": "Cross-Site" },
  });
  expect(crossSite.status).toBe(403);
  // The live channel too.
  const ws = await raw(`/live?session=${token}`, {
    headers: { cookie, connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", origin: "http://evil.example" },
  });
  expect(ws.status).toBe(403);
});

test("every answer carries a strict Content-Security-Policy", async () => {
  const r = await raw("/", { headers: { cookie } });
  expect(r.status).toBe(200);
  const csp = String(r.headers["content-security-policy"]);
  expect(csp).toContain("default-src 'none'");
  expect(csp).toContain("script-src 'self'");
  expect(csp).not.toContain("unsafe-inline");
  expect(csp).toContain("frame-ancestors 'none'");
  expect(r.headers["x-frame-options"]).toBe("DENY");
  // The page loads nothing from anywhere else, and runs no inline script.
  expect(r.body).not.toMatch(/<script(?![^>]*src="\/)/);
  expect(r.body).not.toMatch(/https?:\/\//);
});

test("the app listens on loopback only", async () => {
  expect(new URL(app.url).hostname).toBe("127.0.0.1");
});
