// The "Businesses" dialog: the server's business directory, searched, with a way to write to one.
import { useState } from "preact/hooks";
import { api } from "../api";
import type { Business } from "../api";
import { chatOfPerson } from "../chat";
import { Dialog, ErrorLine, useAction } from "../components/Dialog";

export function Businesses(props: { onOpen: (chat: string) => void; onClose: () => void }) {
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
              <button onClick={() => props.onOpen(chatOfPerson(b.username))} aria-label={`Write to ${b.display_name}`}>
                Write
              </button>
            </li>
          ))}
        </ul>
      )}
    </Dialog>
  );
}
