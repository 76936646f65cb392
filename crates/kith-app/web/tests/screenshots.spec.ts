// The README's pictures of the main screens, taken from a real run (`npm run screenshots`,
// which sets KITH_SCREENSHOTS=1; skipped otherwise). Written to docs/screenshots/.
import { fileURLToPath } from "node:url";
import { expect, test } from "@playwright/test";
import { cliUser, kith, openChat, pageUser, send, startKithd, stopAll } from "./harness";

const OUT = fileURLToPath(new URL("../../../../docs/screenshots/", import.meta.url));

test.skip(!process.env.KITH_SCREENSHOTS, "set KITH_SCREENSHOTS=1 (npm run screenshots)");
test.afterAll(() => stopAll());

test("screenshots of the main screens", async ({ browser }) => {
  test.setTimeout(120_000);
  const server = await startKithd();
  const size = { viewport: { width: 1100, height: 700 } };
  const alice = await pageUser(browser, server, "alice", size);
  const bob = await pageUser(browser, server, "bob", size);
  const carol = await cliUser(server, "carol");
  await kith(carol, "send", "alice", "Are we still on for Saturday?");
  await openChat(bob.page, "alice");
  await send(bob.page, "Hi Alice! The photos from the hike are ready.");
  await openChat(alice.page, "bob");
  await send(alice.page, "Wonderful, send them over!");
  await send(bob.page, "Here is the best one:\nthe ridge at sunrise, everyone squinting.");
  await alice.page.keyboard.press("Escape");
  await alice.page.keyboard.press("g");
  await alice.page.getByLabel("Group name").fill("Climbing club");
  await alice.page.getByLabel("Members, separated by commas").fill("bob, carol");
  await alice.page.getByRole("button", { name: "Create group" }).click();
  await expect(alice.page.locator(".chat-header h2")).toHaveText("Climbing club");
  await send(alice.page, "Saturday at ten at the usual wall?");
  await kith(carol, "sync");
  await kith(carol, "group", "send", "Climbing club", "I'm in, bringing the rope.");
  await expect(alice.page.locator(".message.in .text").last()).toHaveText("I'm in, bringing the rope.");
  await alice.page.screenshot({ path: `${OUT}group.png` });
  await alice.page.locator(`.chat[data-chat="@bob"]`).click();
  await expect(alice.page.locator(".message.in .text").last()).toContainText("ridge at sunrise");
  await alice.page.screenshot({ path: `${OUT}conversation.png` });
  await alice.page.keyboard.press("Escape");
  await alice.page.keyboard.press("Escape");
  await alice.page.screenshot({ path: `${OUT}chat-list.png` });
  await bob.page.keyboard.press("Escape");
  await bob.page.keyboard.press("s");
  await bob.page.getByLabel("Story text").fill("First snow on the hills this morning.");
  await bob.page.getByRole("button", { name: "Post story" }).click();
  await alice.page.keyboard.press("s");
  await expect(alice.page.locator(".story", { hasText: "First snow" })).toBeVisible();
  await alice.page.screenshot({ path: `${OUT}stories.png` });
  await alice.page.keyboard.press("Escape");

  const dark = await browser.newContext({ ...size, colorScheme: "dark" });
  const darkPage = await dark.newPage();
  await darkPage.goto(alice.app.url);
  await darkPage.locator(`.chat[data-chat="@bob"]`).click();
  await expect(darkPage.locator(".message.in .text").last()).toContainText("ridge at sunrise");
  await darkPage.screenshot({ path: `${OUT}dark.png` });

  const narrow = await browser.newContext({ viewport: { width: 360, height: 740 } });
  const phone = await narrow.newPage();
  await phone.goto(alice.app.url);
  await expect(phone.locator(".chat").first()).toBeVisible();
  await phone.screenshot({ path: `${OUT}narrow-list.png` });
  await phone.locator(`.chat[data-chat="@bob"]`).click();
  await expect(phone.locator(".message.in .text").last()).toContainText("ridge at sunrise");
  await phone.screenshot({ path: `${OUT}narrow-chat.png` });
});
