// The Kith app's page: registration on a first run, then the chat list, the open chat (live
// over /live), and dialogs for everything else `kith` does. Text from others is only ever
// rendered as text (JSX escapes it); nothing is loaded from anywhere but the local app.
import { Component, render } from "preact";
import { useCallback, useEffect, useErrorBoundary, useMemo, useRef, useState } from "preact/hooks";
import type { ComponentChildren } from "preact";
import { ApiError, api, liveUrl } from "./api";
import type { Business, Chat, Group, LiveEvent, Me, Message, Story } from "./api";
import "./styles.css";

// ---------- small helpers ----------

const sameDay = (a: Date, b: Date) => a.toDateString() === b.toDateString();

// Made once: building a formatter is far dearer than using one.
const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const DATE = new Intl.DateTimeFormat(undefined, { dateStyle: "short" });

/** A time in the browser's locale: the hour today, the date before. */
function when(ms: number): string {
  const d = new Date(ms);
  const time = TIME.format(d);
  return sameDay(d, new Date()) ? time : `${DATE.format(d)} ${time}`;
}

function timeLeft(until: number): string {
  const s = Math.max(0, Math.round((until - Date.now()) / 1000));
  if (s >= 3600) return `${Math.round(s / 3600)} h left`;
  if (s >= 60) return `${Math.round(s / 60)} min left`;
  return `${s} s left`;
}

const TIMERS: [string, number | null][] = [
  ["Off", null],
  ["30 seconds", 30],
  ["5 minutes", 300],
  ["1 hour", 3600],
  ["1 day", 86400],
  ["1 week", 604800],
  ["4 weeks", 2419200],
];

function timerLabel(seconds: number | null): string {
  const known = TIMERS.find(([, s]) => s === seconds);
  if (known) return known[0];
  return seconds === null ? "Off" : `${seconds} s`;
}

function messageOf(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

const typing = (t: EventTarget | null) =>
  t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));

// ---------- icons (inline SVG: no font or file needed) ----------

function ClockIcon(props: { label?: string }) {
  return (
    <svg class="icon-svg" viewBox="0 0 16 16" aria-hidden={props.label ? undefined : "true"} role={props.label ? "img" : undefined} aria-label={props.label}>
      <circle cx="8" cy="8" r="6.5" fill="none" stroke="currentColor" stroke-width="1.5" />
      <path d="M8 4.5V8l2.5 1.5" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linecap="round" />
    </svg>
  );
}

function GroupIcon() {
  return (
    <svg class="icon-svg" viewBox="0 0 16 16" aria-hidden="true">
      <circle cx="5.5" cy="5.5" r="2.5" fill="currentColor" />
      <circle cx="11" cy="6" r="2" fill="currentColor" opacity="0.7" />
      <path d="M1 14c0-3 2-4.5 4.5-4.5S10 11 10 14z" fill="currentColor" />
      <path d="M10.5 9.5c2 0 4.5 1 4.5 4.5h-4" fill="currentColor" opacity="0.7" />
    </svg>
  );
}

// ---------- dialogs ----------

function Dialog(props: { title: string; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const first = ref.current?.querySelector<HTMLElement>("input, textarea, select, button.primary");
    first?.focus();
  }, []);
  const id = `dialog-${props.title.replace(/\W+/g, "-").toLowerCase()}`;
  return (
    <div class="overlay" onClick={(e) => e.target === e.currentTarget && props.onClose()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-labelledby={id} ref={ref}>
        <header>
          <h2 id={id}>{props.title}</h2>
          <button class="icon" aria-label="Close" title="Close (Esc)" onClick={props.onClose}>
            ×
          </button>
        </header>
        {props.children}
      </div>
    </div>
  );
}

/** A form that runs `action`, shows its error in words, and disables itself meanwhile. */
function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = useCallback(async (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, run, setError };
}

function ErrorLine(props: { error: string | null }) {
  return props.error ? (
    <p class="error" role="alert">
      {props.error}
    </p>
  ) : null;
}

/** Asks before something that cannot be taken back (or that the other side notices). */
function Confirm(props: { title: string; text: string; action: string; onConfirm: () => Promise<void>; onClose: () => void }) {
  const { busy, error, run } = useAction();
  return (
    <Dialog title={props.title} onClose={props.onClose}>
      <p class="confirm-text">{props.text}</p>
      <ErrorLine error={error} />
      <div class="buttons">
        <button onClick={props.onClose}>Cancel</button>
        <button
          class="primary danger"
          disabled={busy}
          onClick={() =>
            run(async () => {
              await props.onConfirm();
              props.onClose();
            })
          }
        >
          {props.action}
        </button>
      </div>
    </Dialog>
  );
}

function NewChat(props: { onOpen: (chat: string) => void; onClose: () => void }) {
  const [name, setName] = useState("");
  return (
    <Dialog title="New chat" onClose={props.onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          const user = name.trim().replace(/^@/, "");
          if (user) props.onOpen(`@${user}`);
        }}
      >
        <label>
          Username
          <input
            aria-label="Username to write to"
            value={name}
            onInput={(e) => setName(e.currentTarget.value)}
            placeholder="e.g. alice"
            autocomplete="off"
          />
        </label>
        <p class="hint">The chat starts with your first message.</p>
        <button class="primary" type="submit">
          Open chat
        </button>
      </form>
    </Dialog>
  );
}

function NewGroup(props: { onCreated: (id: string) => void; onClose: () => void }) {
  const [name, setName] = useState("");
  const [members, setMembers] = useState("");
  const { busy, error, run } = useAction();
  return (
    <Dialog title="New group" onClose={props.onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          run(async () => {
            const list = members.split(/[\s,]+/).map((m) => m.replace(/^@/, "")).filter(Boolean);
            const { id } = await api.createGroup(name, list);
            props.onCreated(id);
          });
        }}
      >
        <label>
          Name
          <input aria-label="Group name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          Members
          <input
            aria-label="Members, separated by commas"
            value={members}
            onInput={(e) => setMembers(e.currentTarget.value)}
            placeholder="bob, carol"
            autocomplete="off"
          />
        </label>
        <ErrorLine error={error} />
        <button class="primary" type="submit" disabled={busy}>
          Create group
        </button>
      </form>
    </Dialog>
  );
}

function Stories(props: { me: string; onClose: () => void; version: number }) {
  const [stories, setStories] = useState<Story[]>([]);
  const [text, setText] = useState("");
  const { busy, error, run } = useAction();
  const [audience, setAudience] = useState<number | null>(null);
  const load = useCallback(
    () =>
      run(async () => {
        setStories(await api.stories());
        setAudience((await api.contacts()).length);
      }),
    [run],
  );
  useEffect(() => void load(), [load, props.version]);
  return (
    <Dialog title="Stories" onClose={props.onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          run(async () => {
            await api.postStory(text);
            setText("");
            setStories(await api.stories());
          });
        }}
      >
        <label>
          A story for your contacts (gone after 24 hours)
          <textarea aria-label="Story text" rows={2} value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </label>
        {audience !== null && (
          <p class="hint">
            {audience === 0
              ? "Nobody would see it yet: your contacts are the people you have chatted with."
              : `${audience} ${audience === 1 ? "contact sees" : "contacts see"} it — the people you have chatted with.`}
          </p>
        )}
        <button class="primary" type="submit" disabled={busy || !text.trim()}>
          Post story
        </button>
      </form>
      <ErrorLine error={error} />
      <ul class="stories" aria-label="Stories">
        {stories.length === 0 && <li class="hint">No stories right now.</li>}
        {stories.map((s) => (
          <li key={s.id} class="story">
            <strong>{s.author === props.me ? "You" : s.author}</strong>
            <span class="meta">
              {when(s.posted_at)} · {timeLeft(s.expires_at)}
            </span>
            <p class="text">{s.text}</p>
          </li>
        ))}
      </ul>
    </Dialog>
  );
}

function Businesses(props: { onOpen: (chat: string) => void; onClose: () => void }) {
  const [q, setQ] = useState("");
  const [found, setFound] = useState<Business[] | null>(null);
  const { busy, error, run } = useAction();
  return (
    <Dialog title="Businesses" onClose={props.onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          run(async () => setFound(await api.businesses(q)));
        }}
      >
        <label>
          Search
          <input aria-label="Search businesses" value={q} onInput={(e) => setQ(e.currentTarget.value)} />
        </label>
        <button class="primary" type="submit" disabled={busy || !q.trim()}>
          Search
        </button>
      </form>
      <ErrorLine error={error} />
      {found && (
        <ul class="businesses" aria-label="Businesses found">
          {found.length === 0 && <li class="hint">No business matches.</li>}
          {found.map((b) => (
            <li key={b.username}>
              <div>
                <strong>{b.display_name}</strong> <span class="badge">Business</span>
                {b.verified && (
                  <span class="verified" title="Verified by this server's admin" aria-label="verified">
                    ✓
                  </span>
                )}
                <div class="meta">@{b.username}</div>
                <p class="text">{b.description}</p>
              </div>
              <button onClick={() => props.onOpen(`@${b.username}`)} aria-label={`Write to ${b.display_name}`}>
                Write
              </button>
            </li>
          ))}
        </ul>
      )}
    </Dialog>
  );
}

function Settings(props: { me: Me; onClose: () => void; notify: NotificationPermission | "unsupported"; askNotify: () => void }) {
  const [blocked, setBlocked] = useState<string[]>([]);
  const [done, setDone] = useState<string | null>(null);
  const [asking, setAsking] = useState(false);
  const { busy, error, run } = useAction();
  useEffect(() => void run(async () => setBlocked(await api.blocked())), [run]);
  return (
    <Dialog title="Settings" onClose={props.onClose}>
      <p>
        Signed in as <strong>{props.me.username}</strong> on <code>{props.me.server}</code>.
      </p>
      <h3>Notifications</h3>
      {props.notify === "unsupported" && <p class="hint">This browser cannot show notifications.</p>}
      {props.notify === "granted" && <p class="hint">On: a message in a chat that is not open shows a notification.</p>}
      {props.notify === "denied" && <p class="hint">Blocked in the browser's site settings.</p>}
      {props.notify === "default" && <button onClick={props.askNotify}>Turn on notifications</button>}
      <h3>Blocked</h3>
      <ul aria-label="Blocked accounts" class="plain">
        {blocked.length === 0 && <li class="hint">Nobody.</li>}
        {blocked.map((u) => (
          <li key={u}>
            {u}{" "}
            <button
              disabled={busy}
              aria-label={`Unblock ${u}`}
              onClick={() =>
                run(async () => {
                  await api.unblock(u);
                  setBlocked(await api.blocked());
                })
              }
            >
              Unblock
            </button>
          </li>
        ))}
      </ul>
      <h3>This device</h3>
      <p class="hint">
        A new token shuts out any copy of this profile made before (if one may have leaked).
      </p>
      {asking ? (
        <div class="buttons">
          <span>Replace this device's token now?</span>
          <button onClick={() => setAsking(false)}>Cancel</button>
          <button
            class="primary"
            disabled={busy}
            onClick={() =>
              run(async () => {
                await api.rotateToken();
                setAsking(false);
                setDone("This device has a new token.");
              })
            }
          >
            Rotate
          </button>
        </div>
      ) : (
        <button disabled={busy} onClick={() => setAsking(true)}>
          Rotate token
        </button>
      )}
      {done && <p role="status">{done}</p>}
      <ErrorLine error={error} />
    </Dialog>
  );
}

const SHORTCUTS: [string, string][] = [
  ["?", "this list"],
  ["n", "new chat"],
  ["g", "new group"],
  ["s", "stories"],
  ["b", "businesses"],
  [",", "settings"],
  ["/", "filter chats"],
  ["j / k", "next / previous chat"],
  ["Enter", "into the message box; there, send (Shift+Enter: new line)"],
  ["Esc", "close a dialog; leave the message box; again: back to the list"],
];

function Help(props: { onClose: () => void }) {
  return (
    <Dialog title="Keyboard shortcuts" onClose={props.onClose}>
      <dl class="shortcuts">
        {SHORTCUTS.map(([k, what]) => (
          <div key={k}>
            <dt>
              <kbd>{k}</kbd>
            </dt>
            <dd>{what}</dd>
          </div>
        ))}
      </dl>
    </Dialog>
  );
}

function GroupInfo(props: { id: string; me: string; onClose: () => void; onLeft: () => void; version: number }) {
  const [group, setGroup] = useState<Group | null>(null);
  const [leaving, setLeaving] = useState(false);
  const [add, setAdd] = useState("");
  const [name, setName] = useState("");
  const { busy, error, run } = useAction();
  const load = useCallback(() => run(async () => setGroup(await api.group(props.id))), [run, props.id]);
  useEffect(() => void load(), [load, props.version]);
  const act = (f: () => Promise<unknown>) =>
    run(async () => {
      await f();
      setGroup(await api.group(props.id));
    });
  return (
    <Dialog title={group?.name ?? "Group"} onClose={props.onClose}>
      {group && (
        <>
          <ul class="members plain" aria-label="Members">
            {group.members.map((m) => (
              <li key={m}>
                <span>
                  {m === props.me ? "You" : m}
                  {group.admins.includes(m) && <span class="badge">admin</span>}
                </span>
                {group.me_admin && m !== props.me && !group.left && (
                  <span class="actions">
                    {!group.admins.includes(m) && (
                      <button disabled={busy} aria-label={`Make ${m} an admin`} onClick={() => act(() => api.groupPromote(props.id, m))}>
                        Make admin
                      </button>
                    )}
                    <button disabled={busy} aria-label={`Remove ${m}`} onClick={() => act(() => api.groupRemove(props.id, m))}>
                      Remove
                    </button>
                  </span>
                )}
              </li>
            ))}
          </ul>
          {group.me_admin && !group.left && (
            <>
              <form
                class="inline"
                onSubmit={(e) => {
                  e.preventDefault();
                  act(async () => {
                    await api.groupAdd(props.id, add.replace(/^@/, "").trim());
                    setAdd("");
                  });
                }}
              >
                <input aria-label="Username to add" placeholder="username" value={add} onInput={(e) => setAdd(e.currentTarget.value)} />
                <button type="submit" disabled={busy || !add.trim()}>
                  Add
                </button>
              </form>
              <form
                class="inline"
                onSubmit={(e) => {
                  e.preventDefault();
                  act(async () => {
                    await api.groupRename(props.id, name);
                    setName("");
                  });
                }}
              >
                <input aria-label="New group name" placeholder="new name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
                <button type="submit" disabled={busy || !name.trim()}>
                  Rename
                </button>
              </form>
            </>
          )}
          {group.left && (
            <p class="hint">{group.removed_by ? `${group.removed_by} removed you from this group.` : "You left this group."}</p>
          )}
          {!group.left && !leaving && (
            <button class="danger" disabled={busy} onClick={() => setLeaving(true)}>
              Leave group
            </button>
          )}
          {!group.left && leaving && (
            <div class="buttons">
              <span>Leave {group.name ?? "the group"}? Only an admin can add you back.</span>
              <button onClick={() => setLeaving(false)}>Cancel</button>
              <button
                class="primary danger"
                disabled={busy}
                onClick={() =>
                  run(async () => {
                    await api.groupLeave(props.id);
                    props.onLeft();
                  })
                }
              >
                Leave
              </button>
            </div>
          )}
        </>
      )}
      <ErrorLine error={error} />
    </Dialog>
  );
}

function Report(props: { message: Message; onClose: () => void }) {
  const [reason, setReason] = useState("");
  const [done, setDone] = useState<number | null>(null);
  const { busy, error, run } = useAction();
  return (
    <Dialog title="Report message" onClose={props.onClose}>
      <blockquote class="text">{props.message.text}</blockquote>
      <p class="hint">
        The server's admin sees this message (proved to be what {props.message.from} sent) and your
        reason — nothing else from your chats.
      </p>
      {done === null ? (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            run(async () => setDone((await api.report(props.message.id, reason)).report_id));
          }}
        >
          <label>
            Reason
            <input aria-label="Reason for the report" value={reason} maxLength={500} onInput={(e) => setReason(e.currentTarget.value)} />
          </label>
          <ErrorLine error={error} />
          <button class="primary danger" type="submit" disabled={busy}>
            Report
          </button>
        </form>
      ) : (
        <p role="status">Reported (report {done}).</p>
      )}
    </Dialog>
  );
}

// ---------- registration ----------

function Register(props: { onDone: (me: Me) => void }) {
  const [username, setUsername] = useState("");
  const [server, setServer] = useState("http://127.0.0.1:8420");
  const [ca, setCa] = useState("");
  const { busy, error, run } = useAction();
  return (
    <main class="register">
      <h1>Welcome to Kith</h1>
      <p>Pick a username on your server. Your keys are made here and never leave this computer.</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          run(async () => props.onDone(await api.register(username, server, ca)));
        }}
      >
        <label>
          Username
          <input aria-label="Username" value={username} onInput={(e) => setUsername(e.currentTarget.value)} autocomplete="username" />
        </label>
        <label>
          Server
          <input aria-label="Server address" value={server} onInput={(e) => setServer(e.currentTarget.value)} />
        </label>
        <label>
          CA certificate (PEM, only for a server with its own certificate authority)
          <textarea aria-label="CA certificate" rows={3} value={ca} onInput={(e) => setCa(e.currentTarget.value)} />
        </label>
        <label class="file">
          …or read it from a file
          <input
            type="file"
            aria-label="CA certificate file"
            accept=".pem,.crt,.cer"
            onChange={async (e) => {
              const f = e.currentTarget.files?.[0];
              if (f) setCa(await f.text());
            }}
          />
        </label>
        <ErrorLine error={error} />
        <button class="primary" type="submit" disabled={busy || !username.trim()}>
          {busy ? "Registering…" : "Register"}
        </button>
      </form>
    </main>
  );
}

// ---------- the messenger ----------

type Panel =
  | null
  | { kind: "newchat" }
  | { kind: "newgroup" }
  | { kind: "stories" }
  | { kind: "businesses" }
  | { kind: "settings" }
  | { kind: "help" }
  | { kind: "group"; id: string }
  | { kind: "report"; message: Message }
  | { kind: "confirm"; title: string; text: string; action: string; run: () => Promise<void> };

/** A system line as its reader sees it: "You …" for their own actions. */
function systemText(m: Message, me: string): string {
  const text = m.text.endsWith(` made ${me} an admin`) ? `${m.text.slice(0, -` ${me} an admin`.length)} you an admin` : m.text;
  return m.from === me && text.startsWith(`${me} `) ? `You ${text.slice(me.length + 1)}` : text;
}

function ChatList(props: {
  me: string;
  chats: Chat[];
  open: string | null;
  filter: string;
  onFilter: (f: string) => void;
  onOpen: (chat: string) => void;
  filterRef: { current: HTMLInputElement | null };
}) {
  const shown = props.chats.filter((c) => c.title.toLowerCase().includes(props.filter.toLowerCase()));
  return (
    <nav class="sidebar" aria-label="Chats">
      <input
        class="filter"
        type="search"
        aria-label="Filter chats"
        placeholder="Filter chats ( / )"
        value={props.filter}
        ref={props.filterRef}
        onInput={(e) => props.onFilter(e.currentTarget.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && shown.length > 0) {
            e.preventDefault();
            props.onOpen(shown[0].chat);
            props.onFilter("");
          } else if (e.key === "Escape") {
            props.onFilter("");
            e.currentTarget.blur();
          }
        }}
      />
      <ul class="chats" role="listbox" aria-label="Chat list">
        {shown.length === 0 && <li class="hint empty">No chats yet: start one with “New chat”.</li>}
        {shown.map((c) => (
          <li
            key={c.chat}
            role="option"
            aria-selected={c.chat === props.open}
            tabIndex={0}
            class={c.chat === props.open ? "chat open" : "chat"}
            data-chat={c.chat}
            onClick={() => props.onOpen(c.chat)}
            onKeyDown={(e) => e.key === "Enter" && props.onOpen(c.chat)}
            aria-label={`${c.title}${c.unread ? `, ${c.unread} unread` : ""}`}
          >
            <div class="line">
              <span class="title">
                {c.kind === "group" && <GroupIcon />}
                {c.title}
              </span>
              {c.business && <span class="badge">Business</span>}
              {c.verified && (
                <span class="verified" title="Verified by this server's admin" aria-label="verified">
                  ✓
                </span>
              )}
              {c.timer_seconds !== null && (
                <span class="timer" title={`Disappearing messages: ${timerLabel(c.timer_seconds)}`}>
                  <ClockIcon label="disappearing messages on" />
                </span>
              )}
              <span class="time">{c.last ? when(c.last.received_at) : ""}</span>
            </div>
            <div class="line">
              <span class="preview">
                {c.left ? "(left) " : ""}
                {c.last ? (c.last.kind === "system" ? systemText(c.last, props.me) : `${c.last.outgoing ? "You" : c.last.from}: ${c.last.text}`) : ""}
              </span>
              {c.unread > 0 && (
                <span class="unread" aria-label={`${c.unread} unread`}>
                  {c.unread}
                </span>
              )}
            </div>
          </li>
        ))}
      </ul>
    </nav>
  );
}

/** One message. Drawn again only if it changes: a busy chat re-renders the list on every
 * arrival, and redrawing thousands of unchanged messages each time would fall behind. */
class MessageItem extends Component<{ m: Message; me: string; inGroup: boolean; onPanel: (p: Panel) => void; onRetry: (m: Message) => void }> {
  shouldComponentUpdate(next: { m: Message; inGroup: boolean }) {
    return next.m !== this.props.m || next.inGroup !== this.props.inGroup;
  }

  render() {
    const { m, me, inGroup, onPanel, onRetry } = this.props;
    if (m.kind === "system") return <li class="system">{systemText(m, me)}</li>;
    return (
      <li class={m.outgoing ? "message out" : "message in"} data-id={m.id}>
        {!m.outgoing && inGroup && <span class="from">{m.from}</span>}
        <p class="text">{m.text}</p>
        <span class="meta">
          <time dateTime={new Date(m.sent_at).toISOString()}>{when(m.sent_at)}</time>
          {m.expires_at !== null && (
            <span title={`Disappears ${when(m.expires_at)}`}>
              {" "}
              <ClockIcon label="disappearing" />
            </span>
          )}
          {!m.outgoing && (
            <button class="link" aria-label={`Report this message from ${m.from}`} onClick={() => onPanel({ kind: "report", message: m })}>
              Report
            </button>
          )}
          {m.outgoing && <Delivery m={m} onRetry={onRetry} />}
        </span>
      </li>
    );
  }
}

/** Where one's own message stands: a clock while it is on its way, a tick once the server has
 * it, "not sent" with the reason and a retry when it was refused. */
function Delivery(props: { m: Message; onRetry: (m: Message) => void }) {
  const { m } = props;
  if (m.state === "sending") {
    return (
      <span class="delivery sending" title="Sending: it goes by itself once the server can be reached">
        {" "}
        <ClockIcon label="sending" />
      </span>
    );
  }
  if (m.state === "failed") {
    return (
      <span class="delivery failed" role="status">
        {" "}
        <span title={m.failure ?? ""}>not sent{m.failure ? `: ${m.failure}` : ""}</span>{" "}
        <button class="link" onClick={() => props.onRetry(m)}>
          retry
        </button>
      </span>
    );
  }
  return (
    <span class="delivery sent" role="img" aria-label="sent" title="Sent">
      {" "}✓
    </span>
  );
}

function Conversation(props: {
  me: string;
  chat: string;
  focus: boolean;
  info: Chat | undefined;
  messages: Message[];
  draft: string;
  onDraft: (text: string) => void;
  onSend: (text: string) => Promise<boolean>;
  onRetry: (m: Message) => void;
  onBack: () => void;
  onPanel: (p: Panel) => void;
  onChanged: () => void;
  onDeleted: () => void;
  blocked: boolean;
}) {
  const list = useRef<HTMLOListElement>(null);
  const input = useRef<HTMLTextAreaElement>(null);
  const { busy, error, run } = useAction();
  const isGroup = props.info?.kind === "group" || !props.chat.startsWith("@");
  const peer = props.chat.replace(/^@/, "");
  const title = props.info?.title ?? peer;
  // In a group the timer is one of its settings, changed by an admin; in a 1:1 by either.
  const [mayChange, setMayChange] = useState(true);
  useEffect(() => {
    if (!isGroup) {
      setMayChange(true);
      return;
    }
    api
      .group(props.chat)
      .then((g) => setMayChange(g.me_admin && !g.left))
      .catch(() => setMayChange(false));
  }, [props.chat, isGroup, props.info?.timer_seconds, props.info?.left]);
  useEffect(() => {
    const el = list.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [props.messages.length, props.chat]);
  // Opened from the list or a dialog, the message box takes the keys; opened with j/k, they
  // stay with the list.
  useEffect(() => {
    if (props.focus) input.current?.focus();
  }, [props.chat]);
  const send = () => {
    const text = props.draft;
    if (!text.trim()) return;
    run(async () => {
      await props.onSend(text);
    });
  };
  return (
    <section class="conversation" aria-label={`Chat with ${title}`}>
      <header class="chat-header">
        <button class="icon back" aria-label="Back to the chat list" onClick={props.onBack}>
          ←
        </button>
        <h2>
          {title}
          {props.info?.business && <span class="badge">Business</span>}
          {props.info?.verified && (
            <span class="verified" title="Verified by this server's admin" aria-label="verified">
              ✓
            </span>
          )}
        </h2>
        <label
          class="timer-select"
          title={mayChange ? "Disappearing messages" : "Disappearing messages (an admin of the group changes them)"}
        >
          <ClockIcon />
          <select
            aria-label="Disappearing messages"
            value={String(props.info?.timer_seconds ?? "off")}
            disabled={busy || props.info?.left || !mayChange}
            onChange={(e) => {
              const v = e.currentTarget.value;
              run(async () => {
                await api.timer(props.chat, v === "off" ? null : Number(v));
                props.onChanged();
              });
            }}
          >
            {TIMERS.map(([label, s]) => (
              <option key={label} value={s === null ? "off" : String(s)}>
                {label}
              </option>
            ))}
            {props.info?.timer_seconds != null && !TIMERS.some(([, s]) => s === props.info?.timer_seconds) && (
              <option value={String(props.info.timer_seconds)}>{timerLabel(props.info.timer_seconds)}</option>
            )}
          </select>
        </label>
        {isGroup ? (
          <button aria-label="Group info and members" onClick={() => props.onPanel({ kind: "group", id: props.chat })}>
            Group info
          </button>
        ) : (
          <>
            <button
              disabled={busy}
              aria-label={props.blocked ? `Unblock ${peer}` : `Block ${peer}`}
              onClick={() =>
                props.blocked
                  ? run(async () => {
                      await api.unblock(peer);
                      props.onChanged();
                    })
                  : props.onPanel({
                      kind: "confirm",
                      title: `Block ${peer}?`,
                      text: `Nothing ${peer} sends will reach you — messages, group messages, stories, invitations. ${peer} is not told. You can unblock later in Settings.`,
                      action: "Block",
                      run: async () => {
                        await api.block(peer);
                        props.onChanged();
                      },
                    })
              }
            >
              {props.blocked ? "Unblock" : "Block"}
            </button>
            <button
              class="danger"
              disabled={busy}
              aria-label={`Delete the chat with ${peer}`}
              onClick={() =>
                props.onPanel({
                  kind: "confirm",
                  title: `Delete the chat with ${peer}?`,
                  text: `Its messages are wiped from this device and ${peer} stops being a contact (no more stories either way). If ${peer} writes again, a new chat starts.`,
                  action: "Delete",
                  run: async () => {
                    await api.deleteChat(peer);
                    props.onDeleted();
                  },
                })
              }
            >
              Delete
            </button>
          </>
        )}
      </header>
      <ol class="messages" ref={list} aria-label="Messages" aria-live="polite">
        {props.messages.length === 0 && <li class="hint empty">No messages yet.</li>}
        {props.messages.map((m) => (
          <MessageItem key={m.id} m={m} me={props.me} inGroup={isGroup} onPanel={props.onPanel} onRetry={props.onRetry} />
        ))}
      </ol>
      <ErrorLine error={error} />
      {props.info?.left && !props.chat.startsWith("@") ? (
        <p class="hint composer-closed">You are no longer in this group.</p>
      ) : (
        <>
        {props.info?.left && <p class="hint composer-closed">This conversation ended; a message starts a new one.</p>}
        <form
          class="composer"
          onSubmit={(e) => {
            e.preventDefault();
            send();
          }}
        >
          <textarea
            ref={input}
            aria-label="Message"
            placeholder="Message"
            title="Enter sends, Shift+Enter breaks the line"
            rows={1}
            value={props.draft}
            onInput={(e) => props.onDraft(e.currentTarget.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
                e.preventDefault();
                send();
              } else if (e.key === "Escape") {
                e.currentTarget.blur();
              }
            }}
          />
          <button class="primary" type="submit" disabled={busy || !props.draft.trim()} aria-label="Send">
            Send
          </button>
        </form>
        </>
      )}
    </section>
  );
}

function notifyState(): NotificationPermission | "unsupported" {
  return typeof Notification === "undefined" ? "unsupported" : Notification.permission;
}

function Messenger(props: { me: Me }) {
  const me = props.me.username ?? "";
  const [chats, setChats] = useState<Chat[]>([]);
  const [open, setOpen] = useState<string | null>(null);
  const [messages, setMessages] = useState<Message[]>([]);
  const [drafts, setDrafts] = useState<Record<string, string>>({});
  const [panel, setPanel] = useState<Panel>(null);
  const [filter, setFilter] = useState("");
  const [online, setOnline] = useState<{ online: boolean; error: string | null }>({ online: false, error: null });
  // What syncs could not do (newest last, a few kept), until dismissed.
  const [notices, setNotices] = useState<string[]>([]);
  const [banner, setBanner] = useState<string | null>(null);
  const [blocked, setBlocked] = useState<string[]>([]);
  const [version, setVersion] = useState(0);
  const [notify, setNotify] = useState(notifyState());
  // Whether the open chat's message box takes the keys (not when the chat came from j/k).
  const [focusComposer, setFocusComposer] = useState(true);
  // The session is gone (the app restarted): nothing on this page can work any more.
  const [ended, setEnded] = useState<string | null>(null);
  const filterRef = useRef<HTMLInputElement>(null);
  const openRef = useRef<string | null>(null);
  openRef.current = open;

  const loadChats = useCallback(async () => {
    try {
      setChats(await api.chats());
      setBlocked(await api.blocked());
    } catch (e) {
      if (e instanceof ApiError && e.code === "no_session") setEnded(e.message);
      else setBanner(messageOf(e));
    }
  }, []);

  const loadOpen = useCallback(async (chat: string) => {
    try {
      const list = await api.messages(chat);
      if (openRef.current === chat) setMessages(list);
      await api.read(chat);
    } catch (e) {
      if (e instanceof ApiError && e.code === "no_such_conversation") {
        if (openRef.current === chat) setMessages([]);
      } else if (e instanceof ApiError && e.code === "no_session") {
        setEnded(e.message);
      } else {
        setBanner(messageOf(e));
      }
    }
  }, []);

  useEffect(() => void loadChats(), [loadChats]);

  // Disappearing messages leave the open chat when their time is up, as they leave the
  // device; the list follows.
  useEffect(() => {
    const now = Date.now();
    const next = messages.reduce<number | null>(
      (soonest, m) => (m.expires_at !== null && (soonest === null || m.expires_at < soonest) ? m.expires_at : soonest),
      null,
    );
    if (next === null) return;
    const timer = window.setTimeout(
      () => {
        const at = Date.now();
        setMessages((old) => old.filter((m) => m.expires_at === null || m.expires_at > at));
        void loadChats();
      },
      Math.min(Math.max(next - now, 0) + 50, 2 ** 31 - 1),
    );
    return () => window.clearTimeout(timer);
  }, [messages, loadChats]);
  useEffect(() => {
    setMessages([]);
    if (open) void loadOpen(open).then(loadChats);
  }, [open, loadOpen, loadChats]);

  // The live channel: new messages appear as they arrive, without polling or reloading.
  useEffect(() => {
    let socket: WebSocket | null = null;
    let stopped = false;
    let pause = 500;
    // The list (and the open chat's read mark) follow at most every 300 ms, however fast
    // messages come: each refresh is a call the app answers between pushes.
    let refresh: number | undefined;
    let markRead = false;
    const refreshSoon = (read = false) => {
      markRead ||= read;
      if (refresh !== undefined) return;
      refresh = window.setTimeout(async () => {
        refresh = undefined;
        const chat = openRef.current;
        if (markRead && chat && !document.hidden) {
          markRead = false;
          await api.read(chat).catch(() => undefined);
        }
        void loadChats();
      }, 300);
    };
    const connect = () => {
      socket = new WebSocket(liveUrl());
      socket.onopen = () => {
        pause = 500;
        refreshSoon();
        if (openRef.current) void loadOpen(openRef.current);
      };
      socket.onmessage = (e) => {
        const event = JSON.parse(e.data as string) as LiveEvent;
        if (event.type === "status") {
          setOnline({ online: event.online, error: event.error?.message ?? null });
        } else if (event.type === "resync") {
          refreshSoon();
          if (openRef.current) void loadOpen(openRef.current);
        } else {
          const mine = event.messages.filter((m) => m.chat !== null && m.chat === openRef.current);
          if (mine.length > 0) {
            setMessages((old) => {
              const seen = new Set(old.map((m) => m.id));
              return [...old, ...mine.map((m) => m.message).filter((m) => !seen.has(m.id))];
            });
          }
          const problems = event.problems ?? [];
          if (problems.length > 0) {
            setNotices((old) => [...old, ...problems.map((p) => p.text)].filter((t, i, all) => all.indexOf(t) === i).slice(-5));
          }
          if (event.messages.some((m) => m.message.kind === "story")) setVersion((v) => v + 1);
          if (event.joined.length > 0 || event.expired > 0) {
            setVersion((v) => v + 1);
            if (openRef.current) void loadOpen(openRef.current);
          }
          for (const { chat, message } of event.messages) {
            const elsewhere = chat !== openRef.current || document.hidden;
            if (elsewhere && !message.outgoing && message.kind !== "system" && notifyState() === "granted") {
              new Notification(message.kind === "story" ? `${message.from} posted a story` : message.from, {
                body: message.text,
                tag: chat ?? message.conversation,
              });
            }
          }
          refreshSoon(mine.length > 0);
        }
      };
      socket.onclose = async () => {
        if (stopped) return;
        // Why: the app stopped (try again), or it started anew and this session is gone.
        let why: string | null = null;
        try {
          await api.me();
        } catch (e) {
          if (e instanceof ApiError && e.code === "no_session") {
            stopped = true;
            setEnded(e.message);
            return;
          }
          why = messageOf(e);
        }
        setOnline((o) => ({ online: false, error: why ?? o.error }));
        window.setTimeout(connect, pause);
        pause = Math.min(pause * 2, 10000);
      };
    };
    connect();
    return () => {
      stopped = true;
      socket?.close();
    };
  }, [loadChats, loadOpen]);

  /** Closing a panel shows what it changed (a group's members, a block, a new name). */
  const closePanel = useCallback(() => {
    setPanel(null);
    void loadChats();
    if (openRef.current) void loadOpen(openRef.current);
  }, [loadChats, loadOpen]);

  const openChat = useCallback((chat: string) => {
    setPanel(null);
    setFocusComposer(true);
    setOpen(chat);
  }, []);

  // Keyboard first: single keys when not typing (the list is on `?`).
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") {
        if (panel) closePanel();
        else if (!typing(e.target)) setOpen(null);
        return;
      }
      if (typing(e.target) || e.ctrlKey || e.metaKey || e.altKey || panel) return;
      // The ref, not the state this handler was made with: a key pressed right after j/k may
      // come before the handler is made again.
      if (e.key === "Enter" && openRef.current && !panel && e.target === document.body) {
        // After j/k: Enter moves into the message box.
        const box = document.querySelector<HTMLTextAreaElement>(".composer textarea");
        if (box) {
          e.preventDefault();
          box.focus();
        }
        return;
      }
      const go = (p: Panel) => {
        e.preventDefault();
        setPanel(p);
      };
      switch (e.key) {
        case "?":
          return go({ kind: "help" });
        case "n":
          return go({ kind: "newchat" });
        case "g":
          return go({ kind: "newgroup" });
        case "s":
          return go({ kind: "stories" });
        case "b":
          return go({ kind: "businesses" });
        case ",":
          return go({ kind: "settings" });
        case "/":
          e.preventDefault();
          filterRef.current?.focus();
          return;
        case "j":
        case "k": {
          e.preventDefault();
          const i = chats.findIndex((c) => c.chat === openRef.current);
          const down = e.key === "j";
          // With no chat open, j starts at the top and k at the bottom.
          const at = i < 0 ? (down ? 0 : chats.length - 1) : Math.max(0, Math.min(chats.length - 1, i + (down ? 1 : -1)));
          const next = chats[at];
          if (next) {
            setFocusComposer(false);
            setOpen(next.chat);
          }
          return;
        }
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [panel, chats, open, closePanel]);

  const info = useMemo(() => chats.find((c) => c.chat === open), [chats, open]);

  const send = async (text: string) => {
    if (!open) return false;
    let answer: Awaited<ReturnType<typeof api.send>>;
    try {
      answer = await api.send(open, text);
    } catch (e) {
      // A refusal after the message was written leaves it in the chat, "not sent", with a
      // retry (the draft stays too: a refusal before writing must not lose it).
      void loadOpen(open);
      throw e;
    }
    const { chat, message, not_delivered } = answer;
    setDrafts((d) => ({ ...d, [open]: "" }));
    if (not_delivered && not_delivered.length > 0) {
      const who = not_delivered.join(", ");
      setNotices((old) =>
        [...old, `Not delivered to ${who}: their queue on the server is full; they will be told they missed it.`].slice(-5),
      );
    }
    if (chat && chat !== open) {
      setOpen(chat);
    } else {
      setMessages((old) => (old.some((m) => m.id === message.id) ? old : [...old, message]));
    }
    void loadChats();
    return true;
  };

  /** A refused message sent again: it comes back sent, waiting, or refused again (with why). */
  const retry = async (m: Message) => {
    try {
      const { message } = await api.retry(m.id);
      setMessages((old) => old.map((o) => (o.id === message.id ? message : o)));
    } catch (e) {
      setNotices((old) => [...old, messageOf(e)].slice(-5));
    }
    void loadChats();
  };

  const askNotify = async () => {
    if (typeof Notification !== "undefined") setNotify(await Notification.requestPermission());
  };

  if (ended) {
    return (
      <main class="register">
        <h1>Kith</h1>
        <p role="alert">{ended}</p>
      </main>
    );
  }

  return (
    <div class="messenger" data-view={open ? "chat" : "list"}>
      {notices.length > 0 && (
        <div class="notices" role="alert" aria-label="What could not be done">
          <ul>
            {notices.map((n) => (
              <li key={n}>{n}</li>
            ))}
          </ul>
          <button onClick={() => setNotices([])} aria-label="Dismiss">
            Dismiss
          </button>
        </div>
      )}
      <header class="topbar">
        <h1>Kith</h1>
        <span class={online.online ? "status online" : "status offline"} role="status" title={online.error ?? ""}>
          {online.online ? "Connected" : online.error ? `Offline: ${online.error}` : "Connecting…"}
        </span>
        <span class="me" aria-label="Signed in as">
          {me}
        </span>
        <nav class="actions" aria-label="Actions">
          <button onClick={() => setPanel({ kind: "newchat" })} aria-label="New chat (n)" title="New chat (n)">
            New chat
          </button>
          <button onClick={() => setPanel({ kind: "newgroup" })} aria-label="New group (g)" title="New group (g)">
            New group
          </button>
          <button onClick={() => setPanel({ kind: "stories" })} aria-label="Stories (s)" title="Stories (s)">
            Stories
          </button>
          <button onClick={() => setPanel({ kind: "businesses" })} aria-label="Businesses (b)" title="Businesses (b)">
            Businesses
          </button>
          <button onClick={() => setPanel({ kind: "settings" })} aria-label="Settings (,)" title="Settings (,)">
            ⚙
          </button>
          <button onClick={() => setPanel({ kind: "help" })} aria-label="Keyboard shortcuts (?)" title="Keyboard shortcuts (?)">
            ?
          </button>
        </nav>
      </header>
      {banner && (
        <div class="banner" role="alert">
          {banner}
          <button class="icon" aria-label="Dismiss" onClick={() => setBanner(null)}>
            ×
          </button>
        </div>
      )}
      <div class="panes">
        <ChatList me={me} chats={chats} open={open} filter={filter} onFilter={setFilter} onOpen={openChat} filterRef={filterRef} />
        {open ? (
          <Conversation
            key={open}
            me={me}
            chat={open}
            focus={focusComposer}
            info={info}
            messages={messages}
            draft={drafts[open] ?? ""}
            onDraft={(text) => setDrafts((d) => ({ ...d, [open]: text }))}
            onSend={send}
            onRetry={(m) => void retry(m)}
            onBack={() => setOpen(null)}
            onPanel={setPanel}
            onChanged={() => {
              void loadChats();
              void loadOpen(open);
            }}
            onDeleted={() => {
              setOpen(null);
              void loadChats();
            }}
            blocked={blocked.includes(open.replace(/^@/, ""))}
          />
        ) : (
          <section class="conversation placeholder" aria-label="No chat open">
            <p>Pick a chat, or start one with “New chat” (n). Press ? for the keyboard shortcuts.</p>
          </section>
        )}
      </div>
      {panel?.kind === "newchat" && <NewChat onOpen={openChat} onClose={closePanel} />}
      {panel?.kind === "newgroup" && (
        <NewGroup
          onCreated={(id) => {
            void loadChats();
            openChat(id);
          }}
          onClose={closePanel}
        />
      )}
      {panel?.kind === "stories" && <Stories me={me} version={version} onClose={closePanel} />}
      {panel?.kind === "businesses" && <Businesses onOpen={openChat} onClose={closePanel} />}
      {panel?.kind === "settings" && (
        <Settings me={props.me} notify={notify} askNotify={askNotify} onClose={closePanel} />
      )}
      {panel?.kind === "help" && <Help onClose={closePanel} />}
      {panel?.kind === "group" && (
        <GroupInfo
          id={panel.id}
          me={me}
          version={version}
          onClose={closePanel}
          onLeft={closePanel}
        />
      )}
      {panel?.kind === "report" && <Report message={panel.message} onClose={closePanel} />}
      {panel?.kind === "confirm" && (
        <Confirm title={panel.title} text={panel.text} action={panel.action} onConfirm={panel.run} onClose={closePanel} />
      )}
    </div>
  );
}

// ---------- the root ----------

function Root() {
  const [me, setMe] = useState<Me | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [crash, reset] = useErrorBoundary();
  useEffect(() => {
    api.me().then(setMe, (e) => setError(messageOf(e)));
  }, []);
  // The page's first useful render, for `npm run perf`.
  useEffect(() => {
    if (me && performance.getEntriesByName("kith:first-render").length === 0) {
      performance.mark("kith:first-render");
    }
  }, [me]);
  if (crash) {
    return (
      <main class="register">
        <h1>Something went wrong on this page</h1>
        <p role="alert">{messageOf(crash)}</p>
        <button onClick={reset}>Try again</button>
      </main>
    );
  }
  if (error) {
    return (
      <main class="register">
        <h1>Kith</h1>
        <p role="alert">{error}</p>
      </main>
    );
  }
  if (!me) return <main class="register" aria-busy="true" />;
  return me.registered ? <Messenger me={me} /> : <Register onDone={setMe} />;
}

const root = document.getElementById("root");
if (root) render(<Root />, root);
