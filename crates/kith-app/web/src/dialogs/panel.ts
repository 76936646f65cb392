// Which dialog is up over the messenger (null: none), with what it needs.
import type { Message } from "../api";

export type Panel =
  | null
  | { kind: "newchat" }
  | { kind: "newgroup" }
  | { kind: "stories" }
  | { kind: "businesses" }
  | { kind: "settings" }
  | { kind: "help" }
  | { kind: "group"; id: string }
  | { kind: "safety"; user: string }
  | { kind: "report"; message: Message }
  | { kind: "confirm"; title: string; text: string; action: string; run: () => Promise<void> };
