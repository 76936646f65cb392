// The chat list (the sidebar): a filter, then every chat with its last line, timer and unread count.
import type { Chat } from "../api";
import { ClockIcon, GroupIcon } from "../components/icons";
import { timerLabel, when } from "../format";
import { systemText } from "../system";

export function ChatList(props: {
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
