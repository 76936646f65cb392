// The page's calls to the local `kith app` process (never to kithd): same origin, the session
// cookie goes by itself, every call carries the session's token (the cookie alone is not
// enough: cookies are shared by every port of 127.0.0.1), and every write says where it comes
// from (the app checks Origin).

const TOKEN_KEY = "kith-session";

/** The session's token: handed over in the address's fragment by `/open`, then kept in this
 * tab's storage (which no other origin, other ports included, can read). */
function sessionToken(): string {
  const fragment = new URLSearchParams(location.hash.slice(1)).get("session");
  if (fragment) {
    sessionStorage.setItem(TOKEN_KEY, fragment);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

const token = sessionToken();

/** The live channel's address (a browser opens a WebSocket without custom headers). */
export const liveUrl = () => `ws://${location.host}/live?session=${encodeURIComponent(token)}`;

export const NO_SESSION =
  "This window has no session with the Kith app: it was restarted, or this is not the address it printed. " +
  "Open the address the app printed in its terminal (each start prints a new one).";

// What the app answers: generated from its Rust types (see types.ts), never written by hand.
import type {
  Business,
  Chat,
  Deleted,
  Device,
  Done,
  Group,
  GroupCreated,
  LinkOffered,
  LinkProgress,
  Me,
  Message,
  KeyWarning,
  Reported,
  Safety,
  Sent,
  Story,
  StoryPosted,
} from "./types";
export type {
  KeyWarning,
  Safety,
  AppError,
  Arrived,
  Business,
  Chat,
  Delivery,
  Device,
  Group,
  Kind,
  LinkOffered,
  LinkProgress,
  LiveEvent,
  Me,
  Message,
  Problem,
  Story,
  SystemEvent,
} from "./types";

/** A refusal, in words, with the SDK's stable code. */
export class ApiError extends Error {
  constructor(
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers: {
        "x-kith-session": token,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError("app_unreachable", "The Kith app is not running. Start it again (kith app) and open the address it prints.");
  }
  const text = await response.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    throw new ApiError("bad_answer", `The app answered ${response.status} without JSON.`);
  }
  if (!response.ok) {
    const e = (data as { error?: { code?: string; message?: string } } | null)?.error;
    if (e?.code === "no_session") throw new ApiError("no_session", NO_SESSION);
    throw new ApiError(e?.code ?? String(response.status), e?.message ?? response.statusText);
  }
  return data as T;
}

const chatPath = (chat: string) => `/api/chats/${encodeURIComponent(chat)}`;
const groupPath = (id: string) => `/api/groups/${encodeURIComponent(id)}`;

export const api = {
  me: () => call<Me>("GET", "/api/me"),
  register: (username: string, server: string, ca_pem: string) =>
    call<Me>("POST", "/api/register", { username, server, ca_pem }),
  chats: () => call<Chat[]>("GET", "/api/chats"),
  messages: (chat: string) => call<Message[]>("GET", `${chatPath(chat)}/messages`),
  read: (chat: string) => call<Done>("POST", `${chatPath(chat)}/read`),
  timer: (chat: string, seconds: number | null) =>
    call<Done>("POST", `${chatPath(chat)}/timer`, { seconds }),
  send: (chat: string, text: string) =>
    call<Sent>("POST", "/api/send", { chat, text }),
  createGroup: (name: string, members: string[]) =>
    call<GroupCreated>("POST", "/api/groups", { name, members }),
  group: (id: string) => call<Group>("GET", groupPath(id)),
  groupAdd: (id: string, user: string) => call<Done>("POST", `${groupPath(id)}/add`, { user }),
  groupRemove: (id: string, user: string) =>
    call<Done>("POST", `${groupPath(id)}/remove`, { user }),
  groupPromote: (id: string, user: string) =>
    call<Done>("POST", `${groupPath(id)}/promote`, { user }),
  groupRename: (id: string, name: string) =>
    call<Done>("POST", `${groupPath(id)}/rename`, { name }),
  groupLeave: (id: string) => call<Done>("POST", `${groupPath(id)}/leave`),
  stories: () => call<Story[]>("GET", "/api/stories"),
  postStory: (text: string) => call<StoryPosted>("POST", "/api/stories", { text }),
  contacts: () => call<string[]>("GET", "/api/contacts"),
  blocked: () => call<string[]>("GET", "/api/blocked"),
  block: (user: string) => call<Done>("POST", "/api/block", { user }),
  unblock: (user: string) => call<Done>("POST", "/api/unblock", { user }),
  report: (message_id: string, reason: string) =>
    call<Reported>("POST", "/api/report", { message_id, reason }),
  businesses: (q: string) => call<Business[]>("GET", `/api/businesses?q=${encodeURIComponent(q)}`),
  retry: (id: string) => call<Sent>("POST", `/api/messages/${encodeURIComponent(id)}/retry`),
  deleteChat: (user: string) => call<Deleted>("POST", "/api/delete", { user }),
  rotateToken: () => call<Done>("POST", "/api/rotate-token"),
  devices: () => call<Device[]>("GET", "/api/devices"),
  renameDevice: (id: number, name: string | null) =>
    call<Device[]>("POST", `/api/devices/${id}/name`, { name }),
  removeDevice: (id: number) => call<Device[]>("POST", `/api/devices/${id}/remove`),
  offerLink: () => call<LinkOffered>("POST", "/api/devices/link"),
  linkProgress: () => call<LinkProgress>("GET", "/api/devices/link"),
  registerByLink: (code: string) => call<Me>("POST", "/api/link", { code }),
  trust: (user: string) => call<Done>("POST", "/api/trust", { user }),
  recover: (username: string, server: string, code: string) =>
    call<Me>("POST", "/api/recover", { username, server, code }),
  safety: (user: string) => call<Safety>("GET", `/api/safety/${encodeURIComponent(user)}`),
  confirmSafety: (user: string, scanned: string | null) =>
    call<Safety>("POST", `/api/safety/${encodeURIComponent(user)}/confirm`, { scanned }),
  clearSafety: (user: string) => call<Done>("POST", `/api/safety/${encodeURIComponent(user)}/clear`),
  keyWarnings: () => call<KeyWarning[]>("GET", "/api/key-warnings"),
};
