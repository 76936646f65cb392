// The app's figures (`npm run perf`, which sets KITH_PERF=1; skipped otherwise): the page's
// time to first render, and how many messages per second one page shows as they arrive
// live. Printed as JSON lines; BENCHMARKS.md has the numbers measured.
import { expect, test } from "@playwright/test";
import { openChat, pageUser, send, startKithd, stopAll } from "./harness";

test.skip(!process.env.KITH_PERF, "set KITH_PERF=1 (npm run perf)");
test.afterAll(() => stopAll());

test("first render and messages shown per second", async ({ browser }) => {
  test.setTimeout(300_000);
  // The server's per-account message budget would stop the burst; the page is measured here.
  const server = await startKithd("[safety]\nmax_messages_per_minute = 1000000\n");
  const alice = await pageUser(browser, server, "alice");
  const bob = await pageUser(browser, server, "bob");
  await openChat(bob.page, "alice");
  await send(bob.page, "warm-up");
  await alice.page.locator(`.chat[data-chat="@bob"]`).click();
  await expect(alice.page.locator(".message.in")).toHaveCount(1);

  // First render: a fresh page load, to the first screen with the person's chats.
  const renders: number[] = [];
  for (let i = 0; i < 5; i++) {
    await alice.page.reload();
    await expect(alice.page.locator(".chat").first()).toBeVisible();
    renders.push(await alice.page.evaluate(() => performance.getEntriesByName("kith:first-render")[0]?.startTime ?? -1));
  }
  renders.sort((a, b) => a - b);
  console.log(JSON.stringify({ figure: "first_render_ms", median: renders[2], all: renders }));
  await expect(alice.page.getByRole("status").filter({ hasText: "Connected" })).toBeVisible();

  // Live arrival: bob's page sends N messages as fast as his app takes them; alice's page,
  // with the chat open, shows each as it arrives.
  await alice.page.locator(`.chat[data-chat="@bob"]`).click();
  const n = Number(process.env.KITH_PERF_MESSAGES ?? 500);
  // Alice's page notes when each new message appears on screen.
  await alice.page.evaluate(() => {
    const w = window as unknown as { arrivals: number[] };
    w.arrivals = [];
    const list = document.querySelector(".messages");
    new MutationObserver((changes) => {
      for (const c of changes) {
        for (const node of c.addedNodes) {
          if (node instanceof HTMLElement && node.matches(".message.in")) w.arrivals.push(performance.now());
        }
      }
    }).observe(list as Node, { childList: true });
  });
  const sent = await bob.page.evaluate(async (n) => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const r = await fetch("/api/send", {
        method: "POST",
        headers: { "content-type": "application/json", "x-kith-session": sessionStorage.getItem("kith-session") ?? "" },
        body: JSON.stringify({ chat: "@alice", text: `burst ${i}` }),
      });
      if (!r.ok) throw new Error(await r.text());
    }
    return { ms: performance.now() - t0 };
  }, n);
  const t0 = Date.now();
  await expect(alice.page.locator(".message.in")).toHaveCount(n + 1, { timeout: 240_000 });
  const shownAfterSend = Date.now() - t0;
  console.log(JSON.stringify({ figure: "bob_sends_per_s", value: (n / sent.ms) * 1000, n }));
  console.log(JSON.stringify({ figure: "alice_shown_ms_after_last_send", value: shownAfterSend, n }));
  const arrivals = await alice.page.evaluate(() => (window as unknown as { arrivals: number[] }).arrivals);
  const span = arrivals[arrivals.length - 1] - arrivals[0];
  console.log(JSON.stringify({ figure: "messages_shown_per_s", value: ((arrivals.length - 1) / span) * 1000, shown: arrivals.length }));
});
