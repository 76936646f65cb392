// The outbox in the page: a message written while kithd is down shows a clock, goes by itself
// once kithd is back (a tick), and reaches the other side once; one kithd refuses for good
// shows "not sent" with why, and a retry sends it.
import { expect, test } from "@playwright/test";
import { cliUser, kith, openChat, pageUser, send, startKithd, startKithdAgain, stopAll, stopKithd } from "./harness";

test.afterAll(() => stopAll());

test("messages written while the server is down go by themselves when it is back", async ({ browser }) => {
  const server = await startKithd();
  const alice = await pageUser(browser, server, "alice");
  const carol = await cliUser(server, "carol");
  await openChat(alice.page, "carol");
  await send(alice.page, "before");
  const before = alice.page.locator(".message.out").filter({ hasText: "before" });
  await expect(before.getByRole("img", { name: "sent" })).toBeVisible();
  await kith(carol, "sync");

  await stopKithd(server);
  await expect(alice.page.getByRole("status").filter({ hasText: "Connected" })).toHaveCount(0, { timeout: 15_000 });
  const box = alice.page.getByLabel("Message", { exact: true });
  for (const text of ["one", "two", "three"]) {
    await box.fill(text);
    await box.press("Enter");
    const item = alice.page.locator(".message.out").filter({ hasText: text });
    await expect(item.getByRole("img", { name: "sending" })).toBeVisible();
  }

  await startKithdAgain(server);
  // Nobody does anything: the app reconnects, sends what waited, and the clocks become ticks.
  for (const text of ["one", "two", "three"]) {
    const item = alice.page.locator(".message.out").filter({ hasText: text });
    await expect(item.getByRole("img", { name: "sent" })).toBeVisible({ timeout: 45_000 });
  }
  const synced = await kith(carol, "--json", "sync");
  const texts = synced
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { text: string })
    .map((m) => m.text);
  expect(texts).toEqual(["one", "two", "three"]);
  expect((await kith(carol, "--json", "sync")).trim()).toBe("");
});

test("a message refused for good says why, and retry sends it", async ({ browser }) => {
  const server = await startKithd("max_queued_per_device = 2\n");
  const alice = await pageUser(browser, server, "alice");
  const carol = await cliUser(server, "carol");
  await openChat(alice.page, "carol");
  await send(alice.page, "hi");
  await kith(carol, "sync");
  // carol is away: her queue takes two, the third is refused.
  await send(alice.page, "first");
  await send(alice.page, "second");
  const box = alice.page.getByLabel("Message", { exact: true });
  await box.fill("third");
  await box.press("Enter");
  const third = alice.page.locator(".message.out").filter({ hasText: "third" });
  await expect(third.locator(".delivery.failed")).toContainText("not sent");
  await expect(third.locator(".delivery.failed")).toContainText("undelivered");
  await kith(carol, "sync");
  await third.getByRole("button", { name: "retry" }).click();
  await expect(third.getByRole("img", { name: "sent" })).toBeVisible();
  const synced = await kith(carol, "sync");
  expect(synced).toContain("third");
});
