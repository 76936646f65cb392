// Words and times for the page: times and dates in the browser's locale, disappearing-message
// timers, an error in words, and whether a key goes to a text field.
import { ApiError } from "./api";

export const sameDay = (a: Date, b: Date) => a.toDateString() === b.toDateString();

// Made once: building a formatter is far dearer than using one.
export const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
export const DATE = new Intl.DateTimeFormat(undefined, { dateStyle: "short" });

/** A time in the browser's locale: the hour today, the date before. */
export function when(ms: number): string {
  const d = new Date(ms);
  const time = TIME.format(d);
  return sameDay(d, new Date()) ? time : `${DATE.format(d)} ${time}`;
}

export function timeLeft(until: number): string {
  const s = Math.max(0, Math.round((until - Date.now()) / 1000));
  if (s >= 3600) return `${Math.round(s / 3600)} h left`;
  if (s >= 60) return `${Math.round(s / 60)} min left`;
  return `${s} s left`;
}

export const TIMERS: [string, number | null][] = [
  ["Off", null],
  ["30 seconds", 30],
  ["5 minutes", 300],
  ["1 hour", 3600],
  ["1 day", 86400],
  ["1 week", 604800],
  ["4 weeks", 2419200],
];

export function timerLabel(seconds: number | null): string {
  const known = TIMERS.find(([, s]) => s === seconds);
  if (known) return known[0];
  return seconds === null ? "Off" : `${seconds} s`;
}

export function messageOf(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

export const typing = (t: EventTarget | null) =>
  t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
