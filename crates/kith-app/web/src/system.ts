// The words of a system line (a group's changes, a timer set) as the one reading it sees them:
// worded here from the event the SDK recorded, never taken apart from its English sentence.
import type { Message, SystemEvent } from "./api";
import { timerLabel } from "./format";

/** A system line as its reader sees it: "You …" for their own actions, "you" when acted on. */
export function systemText(m: Message, me: string): string {
  return m.event ? words(m.event, me) : m.text;
}

function words(e: SystemEvent, me: string): string {
  const actor = (u: string) => (u === me ? "You" : u);
  const object = (u: string) => (u === me ? "you" : u);
  switch (e.kind) {
    case "created":
      return `${actor(e.by)} created the group with ${e.with.map(object).join(", ")}`;
    case "added":
      return `${actor(e.by)} added ${e.who.map(object).join(", ")}`;
    case "removed":
      return `${actor(e.by)} removed ${object(e.who)}`;
    case "left":
      return e.who === me ? "You left the group" : `${e.who} left`;
    case "deleted_chat":
      return e.who === me ? "You deleted this chat" : `${e.who} deleted this chat`;
    case "named":
      return `${actor(e.by)} named the group "${e.name}"`;
    case "timer":
      return e.seconds === null
        ? `${actor(e.by)} turned disappearing messages off`
        : `${actor(e.by)} set disappearing messages to ${timerLabel(e.seconds)}`;
    case "device_added":
      return `${actor(e.who)} added a device`;
    case "device_removed":
      return `${actor(e.who)} removed a device`;
    case "key_unconfirmed":
      return `${e.who}'s account key changed, but their recovery code did not sign the change: their new device stays out until you check with them and trust it`;
    case "recovered":
      return e.who === me
        ? "You took your account back with your recovery code"
        : `${e.who} took their account back with their recovery code: their devices and key are new`;
    case "promoted":
      return `${actor(e.by)} made ${object(e.who)} an admin`;
    case "settings_unreadable":
      return `${actor(e.by)} changed the group's settings in a way this device cannot read; it keeps the ones it had`;
    case "problem":
      return e.text;
  }
}
