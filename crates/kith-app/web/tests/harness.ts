// Real processes for the browser tests: a kithd on a free loopback port, one `kith app` per
// person (each with its own profile folder), and the `kith` command line for people who are
// not in a browser. The binaries come from `cargo build` (KITH_BIN_DIR, default target/debug).
import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "@playwright/test";
import { expect } from "@playwright/test";

const BIN = resolve(
  process.env.KITH_BIN_DIR ?? fileURLToPath(new URL("../../../../target/debug", import.meta.url)),
);
const processes: ChildProcess[] = [];
const folders: string[] = [];

export function folder(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  folders.push(dir);
  return dir;
}

/** Waits until `read()` returns something, or fails after `ms`. */
async function until<T>(what: string, read: () => T | undefined, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = read();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface Server {
  url: string;
  data: string;
  /** The folder holding its configuration, store and logs. */
  root: string;
  child: ChildProcess;
}

/** A kithd; `config` is TOML for its configuration file (e.g. higher limits for `npm run perf`). */
export async function startKithd(config = ""): Promise<Server> {
  const root = folder("kithd-");
  writeFileSync(join(root, "kithd.toml"), config);
  return serveKithd(root, "127.0.0.1:0", "kithd.log");
}

async function serveKithd(root: string, listen: string, logName: string): Promise<Server> {
  const log = join(root, logName);
  const child = spawn(
    "sh",
    [
      "-c",
      `exec "${BIN}/kithd" serve --config "${root}/kithd.toml" --listen ${listen} --data "${root}/store" 2>"${log}"`,
    ],
    { stdio: "ignore", env: { ...process.env, KITHD_LOG: "info" } },
  );
  processes.push(child);
  const addr = await until("kithd to listen", () => {
    try {
      return /addr=(\S+)/.exec(readFileSync(log, "utf8"))?.[1];
    } catch {
      return undefined;
    }
  });
  return { url: `http://${addr}`, data: `${root}/store`, root, child };
}

/** Stops a kithd (as an operator would) and waits until it is gone. */
export async function stopKithd(server: Server): Promise<void> {
  if (server.child.exitCode !== null) return;
  const gone = new Promise((ok) => server.child.once("exit", ok));
  server.child.kill("SIGTERM");
  await gone;
}

/** Starts a stopped kithd again: the same address, configuration and data. */
export async function startKithdAgain(server: Server): Promise<Server> {
  return serveKithd(server.root, new URL(server.url).host, `kithd-again-${Date.now()}.log`);
}

export interface App {
  /** The printed address, with the secret. */
  url: string;
  /** `http://127.0.0.1:PORT` */
  origin: string;
  profile: string;
}

export async function startApp(profile = folder("kith-app-")): Promise<App> {
  const child = spawn(`${BIN}/kith`, ["--profile", profile, "app", "--no-open"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  processes.push(child);
  let out = "";
  child.stdout?.on("data", (d) => (out += String(d)));
  const url = await until("kith app to print its address", () => /open (http:\/\/\S+)/.exec(out)?.[1]);
  return { url, origin: new URL(url).origin, profile };
}

/** Runs `kith` with a profile; resolves with stdout, rejects with stderr. */
export function kith(profile: string, ...args: string[]): Promise<string> {
  return new Promise((ok, fail) =>
    execFile(`${BIN}/kith`, ["--profile", profile, ...args], (err, stdout, stderr) =>
      err ? fail(new Error(`kith ${args.join(" ")}: ${stderr || err.message}`)) : ok(stdout),
    ),
  );
}

/** Starts a long-running `kith` command (`device link` waits for the new device); its output
 * so far, and a promise of its exit code. */
export function kithRunning(profile: string, ...args: string[]): { output: () => string; exited: Promise<number | null> } {
  const child = spawn(`${BIN}/kith`, ["--profile", profile, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  processes.push(child);
  let out = "";
  child.stdout?.on("data", (d) => (out += String(d)));
  child.stderr?.on("data", (d) => (out += String(d)));
  const exited = new Promise<number | null>((ok) => child.on("exit", (code) => ok(code)));
  return { output: () => out, exited };
}

/** The `Link code: …` a running `kith device link` printed. */
export async function linkCodeOf(run: { output: () => string }): Promise<string> {
  return until("kith device link to print its code", () => /Link code: (\S+)/.exec(run.output())?.[1]);
}

export function kithd(...args: string[]): Promise<string> {
  return new Promise((ok, fail) =>
    execFile(`${BIN}/kithd`, args, (err, stdout, stderr) =>
      err ? fail(new Error(`kithd ${args.join(" ")}: ${stderr || err.message}`)) : ok(stdout),
    ),
  );
}

/** A person on the command line: a profile registered on `server`. */
export async function cliUser(server: Server, name: string): Promise<string> {
  const profile = folder(`kith-${name}-`);
  await kith(profile, "register", name, "--server", server.url);
  return profile;
}

/** A person in a browser: their own app and browser context, registered in the page. */
export async function pageUser(
  browser: Browser,
  server: Server,
  name: string,
  options: Parameters<Browser["newContext"]>[0] = {},
): Promise<{ app: App; context: BrowserContext; page: Page }> {
  const app = await startApp();
  const context = await browser.newContext(options);
  const page = await context.newPage();
  await page.goto(app.url);
  await expect(page.getByRole("heading", { name: "Welcome to Kith" })).toBeVisible();
  await page.getByLabel("Username", { exact: true }).fill(name);
  await page.getByLabel("Server address").fill(server.url);
  await page.getByRole("button", { name: "Register" }).click();
  // The recovery code, shown once, before anything else.
  await expect(page.getByRole("heading", { name: "Your recovery code" })).toBeVisible();
  await expect(page.getByLabel("Recovery code")).toHaveText(/^([0-9A-Z]{4}-){5}[0-9A-Z]{4}$/);
  await page.getByRole("button", { name: "I wrote it down" }).click();
  await expect(page.locator(".topbar .me")).toHaveText(name);
  await expect(page.getByRole("status").filter({ hasText: "Connected" })).toBeVisible();
  return { app, context, page };
}

/** Opens (or starts) the chat with `chat` (`@user` or a group's title) in the page. */
export async function openChat(page: Page, user: string) {
  await page.keyboard.press("Escape");
  await page.getByRole("button", { name: "New chat (n)" }).click();
  await page.getByLabel("Username to write to").fill(user);
  await page.getByRole("button", { name: "Open chat" }).click();
}

export async function send(page: Page, text: string) {
  const box = page.getByLabel("Message", { exact: true });
  await box.fill(text);
  await box.press("Enter");
  await expect(page.locator(".message.out .text").filter({ hasText: text }).last()).toBeVisible();
}

export function stopAll() {
  for (const p of processes.splice(0)) p.kill("SIGTERM");
  for (const f of folders.splice(0)) rmSync(f, { recursive: true, force: true });
}
