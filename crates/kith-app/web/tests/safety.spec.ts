// Safety numbers in the page: the same sixty digits and QR code on both sides, verified by
// scanning the other's code (a picture of it) or after comparing in person; a verified
// contact whose account key changes is flagged, and nothing goes to them until it is looked at.
import { expect, test } from "@playwright/test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { folder, kith, openChat, pageUser, send, startKithd, stopAll } from "./harness";

test.afterAll(() => stopAll());

test("two people compare safety numbers, and one scans the other's code", async ({ browser }) => {
  const server = await startKithd();
  const ann = await pageUser(browser, server, "ann");
  const bob = await pageUser(browser, server, "bob");
  await openChat(ann.page, "bob");
  await send(ann.page, "hello bob");
  await openChat(bob.page, "ann");

  const digitsOf = async (page: typeof ann.page, who: string) => {
    await page.getByRole("button", { name: `Safety number with ${who}` }).click();
    const digits = page.getByLabel("Safety number");
    await expect(digits.locator("span")).toHaveCount(12);
    return (await digits.locator("span").allTextContents()).join(" ");
  };
  const atAnn = await digitsOf(ann.page, "bob");
  const atBob = await digitsOf(bob.page, "ann");
  expect(atAnn).toMatch(/^(\d{5} ){11}\d{5}$/);
  expect(atAnn).toBe(atBob);
  await expect(ann.page.getByText("Not verified.")).toBeVisible();

  // bob shows his code; ann takes a picture of it and chooses it.
  const picture = join(folder("kith-qr-"), "bob.png");
  writeFileSync(picture, await bob.page.getByLabel("Your safety number as a QR code").screenshot());
  await ann.page.getByLabel("A picture of their code").setInputFiles(picture);
  await expect(ann.page.getByRole("status").filter({ hasText: "Their code matches: verified." })).toBeVisible();
  await expect(ann.page.getByText(/Verified: you compared this number with bob/)).toBeVisible();
  await ann.page.keyboard.press("Escape");
  await expect(ann.page.getByLabel("safety number verified")).toBeVisible();
});

test("a verified contact whose key changes is flagged before the next message", async ({ browser }) => {
  const server = await startKithd();
  const ann = await pageUser(browser, server, "ann");
  // bob on the command line, with his recovery code.
  const bob = folder("kith-bob-");
  const registered = await kith(bob, "register", "bob", "--server", server.url);
  const code = /Your recovery code: (\S+)/.exec(registered)?.[1] ?? "";
  expect(code).not.toBe("");
  await kith(bob, "send", "ann", "hi ann");
  await openChat(ann.page, "bob");
  await expect(ann.page.locator(".message .text").filter({ hasText: "hi ann" })).toBeVisible();

  // Compared in person: bob's `kith verify ann` shows the same digits.
  await ann.page.getByRole("button", { name: "Safety number with bob" }).click();
  const shown = (await ann.page.getByLabel("Safety number").locator("span").allTextContents()).join(" ");
  const atBob = await kith(bob, "verify", "ann");
  expect(atBob.replace(/\s+/g, " ")).toContain(shown.split(" ").slice(0, 4).join("  ").replace(/\s+/g, " "));
  await ann.page.getByRole("button", { name: "The numbers match: mark as verified" }).click();
  await expect(ann.page.getByText(/Verified: you compared this number with bob/)).toBeVisible();
  await ann.page.keyboard.press("Escape");
  await send(ann.page, "verified you");

  // bob takes his account back on a new device: a new account key.
  const fresh = folder("kith-bob2-");
  await kith(fresh, "recover", "bob", "--server", server.url, "--code", code);
  await kith(fresh, "sync");

  // ann's page flags it, and nothing goes to bob until she looks at the new number.
  await expect(ann.page.getByRole("button", { name: "Safety number with bob" })).toHaveText(/changed/, {
    timeout: 20_000,
  });
  const box = ann.page.getByLabel("Message", { exact: true });
  await box.fill("are you still bob?");
  await box.press("Enter");
  await expect(ann.page.getByRole("alert").filter({ hasText: /safety number changed/i }).first()).toBeVisible();
  await ann.page.getByRole("button", { name: "Safety number with bob" }).click();
  await expect(ann.page.getByRole("alert").filter({ hasText: /changed since you verified/ })).toBeVisible();
  await ann.page.getByRole("button", { name: "The numbers match: mark as verified" }).click();
  await ann.page.keyboard.press("Escape");
  await send(ann.page, "welcome back");
});
