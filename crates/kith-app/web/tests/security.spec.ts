// What another program on the machine, or a web page the person visits, can try against
// the app: every one is refused.
import { request as http } from "node:http";
import { expect, test } from "@playwright/test";
import { startApp, stopAll } from "./harness";
import type { App } from "./harness";

let app: App;
let cookie: string;

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
});

test("a wrong Host is refused (DNS rebinding)", async () => {
  const r = await raw("/api/me", { headers: { cookie, host: `attacker.example:${new URL(app.origin).port}` } });
  expect(r.status).toBe(421);
  expect(JSON.parse(r.body).error.code).toBe("wrong_host");
  const ok = await raw("/api/me", { headers: { cookie } });
  expect(ok.status).toBe(200);
});

test("a send from another origin is refused", async () => {
  const body = JSON.stringify({ chat: "@bob", text: "forged" });
  const json = { cookie, "content-type": "application/json" };
  for (const origin of ["http://evil.example", "null", "http://localhost:1"]) {
    const r = await raw("/api/send", { method: "POST", body, headers: { ...json, origin } });
    expect(r.status, origin).toBe(403);
  }
  const none = await raw("/api/send", { method: "POST", body, headers: json });
  expect(none.status).toBe(403);
  const crossSite = await raw("/api/send", {
    method: "POST",
    body,
    headers: { ...json, origin: app.origin, "sec-fetch-site": "cross-site" },
  });
  expect(crossSite.status).toBe(403);
  // The live channel too.
  const ws = await raw("/live", {
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
