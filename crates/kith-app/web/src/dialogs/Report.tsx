// Reporting a message to the server's admin, with a reason.
import { useState } from "preact/hooks";
import { api } from "../api";
import type { Message } from "../api";
import { Dialog, ErrorLine, useAction } from "../components/Dialog";

export function Report(props: { message: Message; onClose: () => void }) {
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
