// One message in the open chat (or a system line), drawn again only when it changes.
import { Component } from "preact";
import { useState } from "preact/hooks";
import { api } from "../api";
import type { Message } from "../api";
import type { Panel } from "../dialogs/panel";
import { when } from "../format";
import { systemText } from "../system";
import { Delivery } from "./Delivery";
import { ClockIcon } from "./icons";

/** One message. Drawn again only if it changes: a busy chat re-renders the list on every
 * arrival, and redrawing thousands of unchanged messages each time would fall behind. */
export class MessageItem extends Component<{ m: Message; me: string; inGroup: boolean; onPanel: (p: Panel) => void; onRetry: (m: Message) => void }> {
  shouldComponentUpdate(next: { m: Message; inGroup: boolean }) {
    return next.m !== this.props.m || next.inGroup !== this.props.inGroup;
  }

  render() {
    const { m, me, inGroup, onPanel, onRetry } = this.props;
    if (m.kind === "system") {
      const e = m.event;
      return (
        <li class="system">
          {systemText(m, me)}
          {e?.kind === "key_unconfirmed" && <TrustButton who={e.who} />}
        </li>
      );
    }
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

/** For a key change the person's recovery code did not sign: trusted only on the reader's word,
 * after checking with them. */
function TrustButton(props: { who: string }) {
  const [state, setState] = useState<"ask" | "busy" | "done" | string>("ask");
  if (state === "done") return <span> — trusted.</span>;
  return (
    <>
      {" "}
      <button
        class="link"
        disabled={state === "busy"}
        onClick={async () => {
          setState("busy");
          try {
            await api.trust(props.who);
            setState("done");
          } catch (err) {
            setState(err instanceof Error ? err.message : String(err));
          }
        }}
      >
        I checked with {props.who}: trust the new key
      </button>
      {state !== "ask" && state !== "busy" && <span role="alert"> {state}</span>}
    </>
  );
}
