// This account's devices in the page: listed in Settings, this one marked, and named there.
import { expect, test } from "@playwright/test";
import {
  cliUser,
  folder,
  kith,
  kithRunning,
  linkCodeOf,
  pageUser,
  startApp,
  startKithd,
  stopAll,
} from "./harness";

test.afterAll(() => stopAll());

test("this account's devices are listed in settings, and one is named there", async ({ browser }) => {
  const server = await startKithd();
  const ann = await pageUser(browser, server, "ann");
  const page = ann.page;
  await page.getByRole("button", { name: "Settings (,)" }).click();
  const list = page.getByRole("list", { name: "Devices" });
  await expect(list.getByRole("listitem")).toHaveCount(1);
  await expect(list).toContainText("(this device)");
  await expect(list).toContainText("(no name)");
  await list.getByRole("button", { name: /^Rename device/ }).click();
  await page.getByLabel(/^Name of device/).fill("laptop");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(list).toContainText("laptop");
  // Kept on the server: the list read afresh says the same.
  await page.keyboard.press("Escape");
  await page.getByRole("button", { name: "Settings (,)" }).click();
  await expect(page.getByRole("list", { name: "Devices" })).toContainText("laptop");
});

test("a device is linked from the devices page, and removed there", async ({ browser }) => {
  const server = await startKithd();
  const ann = await pageUser(browser, server, "ann");
  const page = ann.page;
  page.on("dialog", (d) => void d.accept());
  await page.getByRole("button", { name: "Settings (,)" }).click();
  await page.getByRole("button", { name: "Link a new device" }).click();
  await expect(page.getByRole("img", { name: "Link QR code" }).locator("svg")).toBeVisible();
  const code = (await page.getByLabel("Link code").textContent()) ?? "";
  expect(code).toMatch(/^[0-9A-Z]{5}-[0-9A-Z]{5}-[0-9A-Z]{5}-[0-9A-Z]{5}@http/);
  // The new device is a command-line profile.
  const laptop = folder("kith-laptop-");
  const joined = await kith(laptop, "register", "--link", code);
  expect(joined).toContain("Linked to ann");
  await expect(page.getByRole("status").filter({ hasText: /Linked device \d+/ })).toBeVisible();
  const list = page.getByRole("list", { name: "Devices" });
  await expect(list.getByRole("listitem")).toHaveCount(2);
  // Removed from here: its token stops working.
  await list.getByRole("button", { name: /^Remove device/ }).click();
  await expect(list.getByRole("listitem")).toHaveCount(1);
  await expect(kith(laptop, "sync")).rejects.toThrow(/unauthorized|token/i);
});

test("a new app links to an existing account from its welcome page", async ({ browser }) => {
  const server = await startKithd();
  const cal = await cliUser(server, "cal");
  const linking = kithRunning(cal, "device", "link");
  const code = await linkCodeOf(linking);
  const app = await startApp();
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(app.url);
  await page.getByRole("button", { name: "Link to an existing account" }).click();
  await page.getByLabel("Link code").fill(code);
  await page.getByRole("button", { name: "Link this computer" }).click();
  await expect(page.locator(".topbar .me")).toHaveText("cal");
  // The history came, and the page said so when it was all in.
  await expect(page.getByText("Your history arrived from your other device.")).toBeVisible({ timeout: 15_000 });
  expect(await linking.exited).toBe(0);
  expect(linking.output()).toContain("Linked device");
  // A message to cal reaches the app too.
  const dee = await cliUser(server, "dee");
  await kith(dee, "send", "cal", "hello both");
  await expect(page.getByText("hello both")).toBeVisible({ timeout: 15_000 });
});

test("an account is taken back in the app with its recovery code", async ({ browser }) => {
  const server = await startKithd();
  // ana registered on the command line, wrote her code down, then lost the device to a thief
  // who rotated its token.
  const ana = folder("kith-ana-");
  const registered = await kith(ana, "register", "ana", "--server", server.url);
  const code = /Your recovery code: (\S+)/.exec(registered)?.[1] ?? "";
  expect(code).toMatch(/^([0-9A-Z]{4}-){5}[0-9A-Z]{4}$/);
  const bob = await cliUser(server, "bob");
  await kith(bob, "send", "ana", "hi ana");
  await kith(ana, "sync");
  await kith(ana, "rotate-token");

  const app = await startApp();
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(app.url);
  await page.getByRole("button", { name: "Take your account back" }).click();
  await page.getByLabel("Username").fill("ana");
  await page.getByLabel("Server address").fill(server.url);
  await page.getByLabel("Recovery code").fill(code.toLowerCase());
  await page.getByRole("button", { name: "Take my account back" }).click();
  // A new code, shown once; the old one is used up.
  await expect(page.getByRole("heading", { name: "Your recovery code" })).toBeVisible();
  await expect(page.getByLabel("Recovery code")).not.toHaveText(code);
  await page.getByRole("button", { name: "I wrote it down" }).click();
  await expect(page.locator(".topbar .me")).toHaveText("ana");
  // The old device is refused; bob's client puts the app's device in their chat.
  await expect(kith(ana, "sync")).rejects.toThrow();
  await kith(bob, "sync");
  await kith(bob, "send", "ana", "welcome back");
  await expect(page.getByText("welcome back")).toBeVisible({ timeout: 15_000 });
});
