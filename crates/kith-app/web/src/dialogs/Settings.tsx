// The "Settings" dialog: who is signed in, notifications, blocked accounts, this account's
// devices, this device's token.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import type { Me } from "../api";
import { Dialog, ErrorLine, useAction } from "../components/Dialog";
import { Devices } from "./Devices";

export function Settings(props: { me: Me; onClose: () => void; notify: NotificationPermission | "unsupported"; askNotify: () => void }) {
  const [blocked, setBlocked] = useState<string[]>([]);
  const [done, setDone] = useState<string | null>(null);
  const [asking, setAsking] = useState(false);
  const { busy, error, run } = useAction();
  useEffect(() => void run(async () => setBlocked(await api.blocked())), [run]);
  return (
    <Dialog title="Settings" onClose={props.onClose}>
      <p>
        Signed in as <strong>{props.me.username}</strong> on <code>{props.me.server}</code>.
      </p>
      <h3>Notifications</h3>
      {props.notify === "unsupported" && <p class="hint">This browser cannot show notifications.</p>}
      {props.notify === "granted" && <p class="hint">On: a message in a chat that is not open shows a notification.</p>}
      {props.notify === "denied" && <p class="hint">Blocked in the browser's site settings.</p>}
      {props.notify === "default" && <button onClick={props.askNotify}>Turn on notifications</button>}
      <h3>Blocked</h3>
      <ul aria-label="Blocked accounts" class="plain">
        {blocked.length === 0 && <li class="hint">Nobody.</li>}
        {blocked.map((u) => (
          <li key={u}>
            {u}{" "}
            <button
              disabled={busy}
              aria-label={`Unblock ${u}`}
              onClick={() =>
                run(async () => {
                  await api.unblock(u);
                  setBlocked(await api.blocked());
                })
              }
            >
              Unblock
            </button>
          </li>
        ))}
      </ul>
      <Devices />
      <h3>This device</h3>
      <p class="hint">
        A new token shuts out any copy of this profile made before (if one may have leaked).
      </p>
      {asking ? (
        <div class="buttons">
          <span>Replace this device's token now?</span>
          <button onClick={() => setAsking(false)}>Cancel</button>
          <button
            class="primary"
            disabled={busy}
            onClick={() =>
              run(async () => {
                await api.rotateToken();
                setAsking(false);
                setDone("This device has a new token.");
              })
            }
          >
            Rotate
          </button>
        </div>
      ) : (
        <button disabled={busy} onClick={() => setAsking(true)}>
          Rotate token
        </button>
      )}
      {done && <p role="status">{done}</p>}
      <ErrorLine error={error} />
    </Dialog>
  );
}
