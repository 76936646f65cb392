// The open chat: its header (timer, group info or block/delete), its messages, and the message box.
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../api";
import type { Chat, Message, Safety } from "../api";
import { isPerson, personOf } from "../chat";
import { ErrorLine, useAction } from "../components/Dialog";
import { ClockIcon } from "../components/icons";
import { MessageItem } from "../components/MessageItem";
import type { Panel } from "../dialogs/panel";
import { TIMERS, timerLabel } from "../format";

export function Conversation(props: {
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
  safetyVersion: number;
}) {
  const list = useRef<HTMLOListElement>(null);
  const input = useRef<HTMLTextAreaElement>(null);
  const { busy, error, run } = useAction();
  const isGroup = props.info?.kind === "group" || !isPerson(props.chat);
  // A group's id stands as it is (the title falls back to it until the list has the chat).
  const peer = personOf(props.chat) ?? props.chat;
  const title = props.info?.title ?? peer;
  // A 1:1's safety number: whether this person verified it, and whether it changed since.
  const [safety, setSafety] = useState<Safety | null>(null);
  const [safetyAsked, setSafetyAsked] = useState(0);
  useEffect(() => {
    if (isGroup) {
      setSafety(null);
      return;
    }
    let current = true;
    api
      .safety(peer)
      .then((s) => current && setSafety(s))
      .catch(() => current && setSafety(null));
    return () => {
      current = false;
    };
  }, [props.chat, isGroup, props.safetyVersion, props.messages.length, safetyAsked]);
  // Asked again every few seconds while the chat is open: a contact's key changes whenever
  // their devices say so, not only with a message.
  useEffect(() => {
    if (isGroup) return;
    const timer = window.setInterval(() => setSafetyAsked((n) => n + 1), 10_000);
    return () => window.clearInterval(timer);
  }, [props.chat, isGroup]);
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
      try {
        await props.onSend(text);
      } catch (e) {
        // A refusal for a changed safety number: the header says so at once.
        setSafetyAsked((n) => n + 1);
        throw e;
      }
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
          {safety?.verified && (
            <span class="badge" title="You compared safety numbers with them" aria-label="safety number verified">
              verified
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
              class={safety?.changed ? "danger" : ""}
              aria-label={`Safety number with ${peer}`}
              onClick={() => props.onPanel({ kind: "safety", user: peer })}
            >
              {safety?.changed ? "⚠ Safety number changed" : "Safety number"}
            </button>
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
      {props.info?.left && !isPerson(props.chat) ? (
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
