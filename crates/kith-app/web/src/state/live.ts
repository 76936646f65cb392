// The live channel to the app (/live): it reconnects with back-off, says whether the app is
// online, brings new messages into the open chat, refreshes the list, and notifies.
import { useEffect, useState } from "preact/hooks";
import type { Dispatch, StateUpdater } from "preact/hooks";
import { ApiError, api, liveUrl } from "../api";
import type { LiveEvent, Message } from "../api";
import { messageOf } from "../format";
import { notifyState } from "./notify";

export interface Online {
  online: boolean;
  error: string | null;
}

/** `version` counts changes that dialogs showing stories or a group load again for. */
export function useLive(props: {
  openRef: { current: string | null };
  loadChats: () => Promise<void>;
  loadOpen: (chat: string) => Promise<void>;
  setMessages: Dispatch<StateUpdater<Message[]>>;
  setNotices: Dispatch<StateUpdater<string[]>>;
  setEnded: Dispatch<StateUpdater<string | null>>;
}) {
  const { openRef, loadChats, loadOpen, setMessages, setNotices, setEnded } = props;
  const [online, setOnline] = useState<Online>({ online: false, error: null });
  const [version, setVersion] = useState(0);
  // A history another device of this account hands this one: chunks here, of how many.
  const [history, setHistory] = useState<{ done: number; total: number } | null>(null);

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
        } else if (event.type === "history") {
          if (event.finished) {
            setHistory(null);
            setNotices((old) => [...old, "Your history arrived from your other device."]);
            refreshSoon();
          } else {
            setHistory({ done: event.done, total: event.total });
          }
        } else if (event.type === "recovery_code") {
          // The page's root asks for it (once) and shows it.
          window.dispatchEvent(new Event("kith:recovery-code"));
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

  return { online, version, history };
}
