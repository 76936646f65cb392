// The messenger, once registered: the top bar, the chat list, the open chat, and the dialog
// that is up. Its state lives in the hooks under state/.
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api } from "../api";
import type { KeyWarning, Me } from "../api";
import { chatOfGroup, personOf } from "../chat";
import { Confirm } from "../components/Dialog";
import { Businesses } from "../dialogs/Businesses";
import { GroupInfo } from "../dialogs/GroupInfo";
import { Help } from "../dialogs/Help";
import { NewChat } from "../dialogs/NewChat";
import { NewGroup } from "../dialogs/NewGroup";
import type { Panel } from "../dialogs/panel";
import { Report } from "../dialogs/Report";
import { SafetyNumber } from "../dialogs/SafetyNumber";
import { Settings } from "../dialogs/Settings";
import { Stories } from "../dialogs/Stories";
import { useChats } from "../state/chats";
import { useLive } from "../state/live";
import { useNotify } from "../state/notify";
import { useSend } from "../state/send";
import { useShortcuts } from "../state/shortcuts";
import { ChatList } from "./ChatList";
import { Conversation } from "./Conversation";

export function Messenger(props: { me: Me }) {
  const me = props.me.username ?? "";
  const { chats, blocked, open, setOpen, openRef, messages, setMessages, loadChats, loadOpen, banner, setBanner, ended, setEnded } =
    useChats();
  // What syncs could not do (newest last, a few kept), until dismissed.
  const [notices, setNotices] = useState<string[]>([]);
  const { online, version, history } = useLive({ openRef, loadChats, loadOpen, setMessages, setNotices, setEnded });
  const { notify, askNotify } = useNotify();
  const { drafts, setDrafts, send, retry } = useSend({ open, setOpen, setMessages, setNotices, loadChats, loadOpen });
  const [panel, setPanel] = useState<Panel>(null);
  // Bumped when a safety number is verified or cleared, so the open chat's mark follows.
  const [safetyVersion, setSafetyVersion] = useState(0);
  const [filter, setFilter] = useState("");
  // Whether the open chat's message box takes the keys (not when the chat came from j/k).
  const [focusComposer, setFocusComposer] = useState(true);
  const filterRef = useRef<HTMLInputElement>(null);
  // What the key directory did not prove, or showed for this account that none of its devices
  // made: loud, until dismissed (each once, on this browser).
  const [keyWarnings, setKeyWarnings] = useState<KeyWarning[]>([]);
  useEffect(() => {
    const seen = new Set((localStorage.getItem("kith-key-warnings-seen") ?? "").split(",").filter(Boolean));
    api
      .keyWarnings()
      .then((ws) => setKeyWarnings(ws.filter((w) => !seen.has(String(w.id)))))
      .catch(() => {});
  }, [version]);
  const dismissKeyWarnings = () => {
    const seen = (localStorage.getItem("kith-key-warnings-seen") ?? "").split(",").filter(Boolean);
    localStorage.setItem("kith-key-warnings-seen", [...seen, ...keyWarnings.map((w) => String(w.id))].join(","));
    setKeyWarnings([]);
  };

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

  useShortcuts({ panel, chats, open, openRef, filterRef, closePanel, setPanel, setOpen, setFocusComposer });

  const info = useMemo(() => chats.find((c) => c.chat === open), [chats, open]);
  // Only a person is blocked (the block buttons are only in a chat with one).
  const isBlocked = (chat: string) => {
    const who = personOf(chat);
    return who !== null && blocked.includes(who);
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
      {keyWarnings.length > 0 && (
        <div class="notices key-warnings-banner" role="alert" aria-label="Key warnings">
          <ul class="key-warnings">
            {keyWarnings.map((w) => (
              <li key={w.id} class="warning">
                {w.own ? "Your account: " : w.username ? `${w.username}: ` : ""}
                {w.what}
              </li>
            ))}
          </ul>
          <button onClick={dismissKeyWarnings} aria-label="Dismiss the key warnings">
            Dismiss
          </button>
        </div>
      )}
      {history && (
        <div class="history-progress">
          <label>
            Receiving your history from your other device{history.total > 0 ? `: ${history.done} of ${history.total}` : "…"}{" "}
            <progress aria-label="History received" value={history.done} max={Math.max(history.total, 1)} />
          </label>
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
            blocked={isBlocked(open)}
            safetyVersion={safetyVersion}
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
            openChat(chatOfGroup(id));
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
      {panel?.kind === "safety" && (
        <SafetyNumber user={panel.user} onClose={closePanel} onChanged={() => setSafetyVersion((v) => v + 1)} />
      )}
      {panel?.kind === "confirm" && (
        <Confirm title={panel.title} text={panel.text} action={panel.action} onConfirm={panel.run} onClose={closePanel} />
      )}
    </div>
  );
}
