// The words of a system line (a group's changes, a timer set) as the one reading it sees them.
import type { Message } from "./api";

/** A system line as its reader sees it: "You …" for their own actions. */
export function systemText(m: Message, me: string): string {
  const text = m.text.endsWith(` made ${me} an admin`) ? `${m.text.slice(0, -` ${me} an admin`.length)} you an admin` : m.text;
  return m.from === me && text.startsWith(`${me} `) ? `You ${text.slice(me.length + 1)}` : text;
}
