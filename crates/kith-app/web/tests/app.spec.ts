// Two people in two browser contexts, each with their own `kith app`, a third on the command
// line, all against one real kithd.
import { expect, test } from "@playwright/test";
import type { BrowserContext, Page } from "@playwright/test";
import { cliUser, kith, kithd, openChat, pageUser, send, startKithd, stopAll } from "./harness";
import type { App, Server } from "./harness";

let server: Server;
let alice: { app: App; context: BrowserContext; page: Page };
let bob: { app: App; context: BrowserContext; page: Page };
let carol: string; // a profile folder: carol uses the command line

test.describe.configure({ mode: "serial" });

test.beforeAll(async ({ browser }) => {
  server = await startKithd();
  alice = await pageUser(browser, server, "alice");
  bob = await pageUser(browser, server, "bob");
  carol = await cliUser(server, "carol");
});

test.afterAll(() => stopAll());

test("a message sent in one page appears in the other without a reload", async () => {
  // Mark bob's page: a reload or navigation would lose the mark.
  await bob.page.evaluate(() => ((window as unknown as { mark: number }).mark = 42));
  await openChat(alice.page, "bob");
  await send(alice.page, "hello bob");
  const chat = bob.page.locator(`.chat[data-chat="@alice"]`);
  await expect(chat.locator(".unread")).toHaveText("1");
  await chat.click();
  await expect(bob.page.locator(".message.in .text")).toHaveText(["hello bob"]);
  // The answer arrives live in alice's open chat.
  await send(bob.page, "hi alice\nsecond line");
  await expect(alice.page.locator(".message.in .text")).toHaveText(["hi alice\nsecond line"]);
  expect(await bob.page.evaluate(() => (window as unknown as { mark: number }).mark)).toBe(42);
});

test("the draft survives switching chats, Shift+Enter breaks a line", async () => {
  await openChat(alice.page, "carol");
  const box = alice.page.getByLabel("Message", { exact: true });
  await box.fill("half a thought");
  await box.press("Shift+Enter");
  await expect(box).toHaveValue("half a thought\n");
  await alice.page.locator(`.chat[data-chat="@bob"]`).click();
  await expect(box).toHaveValue("");
  await openChat(alice.page, "carol");
  await expect(alice.page.getByLabel("Message", { exact: true })).toHaveValue("half a thought\n");
  await alice.page.getByLabel("Message", { exact: true }).fill("");
});

test("message text is shown as text, never as HTML", async () => {
  let dialogs = 0;
  bob.page.on("dialog", (d) => {
    dialogs += 1;
    void d.dismiss();
  });
  await openChat(alice.page, "bob");
  const attack = "<img src=x onerror=alert(1)>";
  await send(alice.page, attack);
  await bob.page.locator(`.chat[data-chat="@alice"]`).click();
  await expect(bob.page.locator(".message.in .text").last()).toHaveText(attack);
  await expect(bob.page.locator(".messages img")).toHaveCount(0);
  expect(dialogs).toBe(0);
});

test("a group made in the page reaches a person on the command line, and back", async () => {
  await alice.page.keyboard.press("Escape");
  await alice.page.keyboard.press("g");
  await alice.page.getByLabel("Group name").fill("Climbing");
  await alice.page.getByLabel("Members, separated by commas").fill("bob, carol");
  await alice.page.getByRole("button", { name: "Create group" }).click();
  await expect(alice.page.locator(".chat-header h2")).toHaveText("Climbing");
  // The creator's own history says what the creator did.
  await expect(alice.page.locator(".system").first()).toHaveText("You created the group with bob, carol");
  await send(alice.page, "Saturday at ten?");
  const synced = await kith(carol, "sync");
  expect(synced).toContain("Saturday at ten?");
  await kith(carol, "group", "send", "Climbing", "I'm in");
  await expect(alice.page.locator(".message.in .text").last()).toHaveText("I'm in");
  // The group's system lines are shown as in `kith sync`.
  await alice.page.getByRole("button", { name: "Group info and members" }).click();
  await alice.page.getByRole("button", { name: "Make carol an admin" }).click();
  await expect(alice.page.getByRole("dialog").locator("li", { hasText: "carol" }).locator(".badge")).toHaveText("admin");
  await alice.page.keyboard.press("Escape");
  await expect(alice.page.locator(".system").last()).toContainText("made carol an admin");
  await bob.page.locator(".chat", { hasText: "Climbing" }).click();
  await expect(bob.page.locator(".message.in .text")).toHaveText(["Saturday at ten?", "I'm in"]);
  // A group's timer is one of its settings, an admin's to change: greyed for bob, who is not
  // one; alice's is hers to set.
  await expect(bob.page.getByLabel("Disappearing messages")).toBeDisabled();
  await expect(alice.page.getByLabel("Disappearing messages")).toBeEnabled();
});

test("a story reaches contacts, not strangers", async ({ browser }) => {
  const dave = await cliUser(server, "dave");
  await alice.page.keyboard.press("Escape");
  await alice.page.keyboard.press("s");
  await alice.page.getByLabel("Story text").fill("sunset from the roof");
  await alice.page.getByRole("button", { name: "Post story" }).click();
  await expect(alice.page.locator(".story .text").first()).toHaveText("sunset from the roof");
  await alice.page.keyboard.press("Escape");
  // bob (a contact: they have talked) sees it in his page, with the time left.
  await bob.page.keyboard.press("Escape");
  await bob.page.keyboard.press("s");
  const story = bob.page.locator(".story", { hasText: "sunset from the roof" });
  await expect(story).toBeVisible();
  await expect(story.locator(".meta")).toContainText("h left");
  await bob.page.keyboard.press("Escape");
  // dave, a stranger, sees nothing.
  await kith(dave, "sync");
  expect(await kith(dave, "story", "list")).not.toContain("sunset");
  void browser;
});

test("a report reaches kithd admin reports", async () => {
  await bob.page.locator(`.chat[data-chat="@alice"]`).click();
  await bob.page.getByRole("button", { name: "Report this message from alice" }).first().click();
  await bob.page.getByLabel("Reason for the report").fill("testing the report path");
  await bob.page.getByRole("dialog").getByRole("button", { name: "Report" }).click();
  await expect(bob.page.getByRole("status").filter({ hasText: "Reported" })).toBeVisible();
  await bob.page.keyboard.press("Escape");
  const reports = await kithd("admin", "reports", "--data", server.data);
  expect(reports).toContain("testing the report path");
  expect(reports).toContain("hello bob");
});

test("a block stops delivery", async () => {
  await bob.page.locator(`.chat[data-chat="@alice"]`).click();
  await bob.page.getByRole("button", { name: "Block alice" }).click();
  // Asked first, in the page's own dialog.
  await bob.page.getByRole("dialog").getByRole("button", { name: "Block", exact: true }).click();
  await expect(bob.page.getByRole("button", { name: "Unblock alice" })).toBeVisible();
  const before = await bob.page.locator(".message.in").count();
  await openChat(alice.page, "bob");
  await send(alice.page, "are you there?");
  // carol's message to bob arrives; alice's, sent before it, never does.
  await kith(carol, "send", "bob", "ping from carol");
  await expect(bob.page.locator(`.chat[data-chat="@carol"]`)).toBeVisible();
  await bob.page.locator(`.chat[data-chat="@alice"]`).click();
  await expect(bob.page.locator(".message.in")).toHaveCount(before);
  await expect(bob.page.locator(".message.in .text", { hasText: "are you there?" })).toHaveCount(0);
});

test("errors from the SDK show as words in the page", async () => {
  await openChat(alice.page, "nobody-here");
  const box = alice.page.getByLabel("Message", { exact: true });
  await box.fill("hello?");
  await box.press("Enter");
  await expect(alice.page.locator(".conversation .error")).toContainText("nobody-here");
});

test("j and k walk the chat list, and leave the keys with the list", async () => {
  const page = alice.page;
  await page.keyboard.press("Escape");
  await page.locator(".messages").click(); // out of the message box
  await page.keyboard.press("Escape");
  await expect(page.locator(".conversation.placeholder")).toBeVisible();
  const order = await page.locator(".chat").evaluateAll((els) => els.map((e) => e.getAttribute("data-chat")));
  expect(order.length).toBeGreaterThanOrEqual(2);
  await page.keyboard.press("j");
  await expect(page.locator(".chat.open")).toHaveAttribute("data-chat", order[0] ?? "");
  await page.keyboard.press("j");
  await expect(page.locator(".chat.open")).toHaveAttribute("data-chat", order[1] ?? "");
  await page.keyboard.press("k");
  await expect(page.locator(".chat.open")).toHaveAttribute("data-chat", order[0] ?? "");
  // With no chat open, k starts at the bottom.
  await page.keyboard.press("Escape");
  await page.keyboard.press("k");
  await expect(page.locator(".chat.open")).toHaveAttribute("data-chat", order[order.length - 1] ?? "");
  // Enter moves into the message box.
  await page.keyboard.press("Enter");
  await page.keyboard.type("typed after Enter");
  await expect(page.getByLabel("Message", { exact: true })).toHaveValue("typed after Enter");
  await page.getByLabel("Message", { exact: true }).fill("");
  await expect(page.getByLabel("Message", { exact: true })).toHaveValue("");
});

test("a disappearing message leaves the open chat when its time is up, without a reload", async ({ browser }) => {
  // Another window on alice's app, with the page's clock in the test's hands.
  const context = await browser.newContext();
  await context.clock.install();
  const page = await context.newPage();
  await page.goto(alice.app.url);
  await kith(carol, "disappear", "alice", "30s");
  await kith(carol, "send", "alice", "this one goes");
  await page.locator(`.chat[data-chat="@carol"]`).click();
  await expect(page.locator(".message.in .text", { hasText: "this one goes" })).toBeVisible();
  await page.clock.fastForward(35_000);
  await expect(page.locator(".message.in .text", { hasText: "this one goes" })).toHaveCount(0);
  await context.close();
});

test("a window without a session says what to do", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(alice.app.origin + "/");
  await expect(page.locator("body")).toContainText("kith app");
  await context.close();
});

test("a new contact's stories show without restarting the app", async () => {
  // erin writes first and posts a story; alice's device holds the invitation to it until
  // erin is her contact too, which her answer makes so.
  const erin = await cliUser(server, "erin");
  await kith(erin, "send", "alice", "hello from erin");
  await kith(erin, "story", "post", "erin's garden");
  await openChat(alice.page, "erin");
  await send(alice.page, "hi erin");
  await alice.page.getByRole("button", { name: "Stories (s)" }).click();
  await expect(alice.page.locator(".story", { hasText: "erin's garden" })).toBeVisible({ timeout: 15_000 });
  await alice.page.keyboard.press("Escape");
});
