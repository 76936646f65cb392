// The chat list and the open chat's messages: loading them, following the open chat, and
// dropping disappearing messages when their time is up; with what loading could not do.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError, api } from "../api";
import type { Chat, Message } from "../api";
import { messageOf } from "../format";

export function useChats() {
  const [chats, setChats] = useState<Chat[]>([]);
  const [open, setOpen] = useState<string | null>(null);
  const [messages, setMessages] = useState<Message[]>([]);
  const [banner, setBanner] = useState<string | null>(null);
  const [blocked, setBlocked] = useState<string[]>([]);
  // The session is gone (the app restarted): nothing on this page can work any more.
  const [ended, setEnded] = useState<string | null>(null);
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

  return { chats, blocked, open, setOpen, openRef, messages, setMessages, loadChats, loadOpen, banner, setBanner, ended, setEnded };
}
