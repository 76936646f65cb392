// The first run: registering a username on a server (keys are made here, on this computer).
import { useState } from "preact/hooks";
import { api } from "../api";
import type { Me } from "../api";
import { ErrorLine, useAction } from "../components/Dialog";

export function Register(props: { onDone: (me: Me) => void }) {
  const [linking, setLinking] = useState(false);
  if (linking) return <LinkHere onDone={props.onDone} onBack={() => setLinking(false)} />;
  return <NewAccount onDone={props.onDone} onLink={() => setLinking(true)} />;
}

/** "Link to an existing account": this computer joins an account another device of it has,
 * with the code that device shows (Settings → Devices → Link a new device, or `kith device
 * link`). */
function LinkHere(props: { onDone: (me: Me) => void; onBack: () => void }) {
  const [code, setCode] = useState("");
  const { busy, error, run } = useAction();
  return (
    <main class="register">
      <h1>Link to an existing account</h1>
      <p>
        On a device that has your account, open Settings → Devices → “Link a new device” (or run{" "}
        <code>kith device link</code>), and type the code it shows here.
      </p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          run(async () => props.onDone(await api.registerByLink(code)));
        }}
      >
        <label>
          Link code
          <input
            aria-label="Link code"
            value={code}
            placeholder="XXXXX-XXXXX-XXXXX-XXXXX@server"
            onInput={(e) => setCode(e.currentTarget.value)}
          />
        </label>
        <ErrorLine error={error} />
        <button class="primary" type="submit" disabled={busy || !code.trim()}>
          {busy ? "Waiting for the other device…" : "Link this computer"}
        </button>{" "}
        <button type="button" onClick={props.onBack} disabled={busy}>
          Back
        </button>
      </form>
    </main>
  );
}

function NewAccount(props: { onDone: (me: Me) => void; onLink: () => void }) {
  const [username, setUsername] = useState("");
  const [server, setServer] = useState("http://127.0.0.1:8420");
  const [ca, setCa] = useState("");
  const { busy, error, run } = useAction();
  return (
    <main class="register">
      <h1>Welcome to Kith</h1>
      <p>Pick a username on your server. Your keys are made here and never leave this computer.</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          run(async () => props.onDone(await api.register(username, server, ca)));
        }}
      >
        <label>
          Username
          <input aria-label="Username" value={username} onInput={(e) => setUsername(e.currentTarget.value)} autocomplete="username" />
        </label>
        <label>
          Server
          <input aria-label="Server address" value={server} onInput={(e) => setServer(e.currentTarget.value)} />
        </label>
        <label>
          CA certificate (PEM, only for a server with its own certificate authority)
          <textarea aria-label="CA certificate" rows={3} value={ca} onInput={(e) => setCa(e.currentTarget.value)} />
        </label>
        <label class="file">
          …or read it from a file
          <input
            type="file"
            aria-label="CA certificate file"
            accept=".pem,.crt,.cer"
            onChange={async (e) => {
              const f = e.currentTarget.files?.[0];
              if (f) setCa(await f.text());
            }}
          />
        </label>
        <ErrorLine error={error} />
        <button class="primary" type="submit" disabled={busy || !username.trim()}>
          {busy ? "Registering…" : "Register"}
        </button>
      </form>
      <p>
        Already have an account on another device?{" "}
        <button type="button" onClick={props.onLink}>
          Link to an existing account
        </button>
      </p>
    </main>
  );
}
