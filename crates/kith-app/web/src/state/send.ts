// Writing in the open chat: each chat's draft, sending (with who it did not reach), and sending
// a refused message again.
import { useState } from "preact/hooks";
import type { Dispatch, StateUpdater } from "preact/hooks";
import { api } from "../api";
import type { Message } from "../api";
import { messageOf } from "../format";

export function useSend(props: {
  open: string | null;
  setOpen: Dispatch<StateUpdater<string | null>>;
  setMessages: Dispatch<StateUpdater<Message[]>>;
  setNotices: Dispatch<StateUpdater<string[]>>;
  loadChats: () => Promise<void>;
  loadOpen: (chat: string) => Promise<void>;
}) {
  const { open, setOpen, setMessages, setNotices, loadChats, loadOpen } = props;
  const [drafts, setDrafts] = useState<Record<string, string>>({});

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

  return { drafts, setDrafts, send, retry };
}
