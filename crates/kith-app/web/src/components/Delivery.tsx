// The delivery mark on one's own message: sending, sent, or not sent with a retry.
import type { Message } from "../api";
import { ClockIcon } from "./icons";

/** Where one's own message stands: a clock while it is on its way, a tick once the server has
 * it, "not sent" with the reason and a retry when it was refused. */
export function Delivery(props: { m: Message; onRetry: (m: Message) => void }) {
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
