// This account's devices in the page: listed in Settings, this one marked, and named there.
import { expect, test } from "@playwright/test";
import { pageUser, startKithd, stopAll } from "./harness";

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
