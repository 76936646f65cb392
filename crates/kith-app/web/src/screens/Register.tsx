// The first run: registering a username on a server (keys are made here, on this computer).
import { useState } from "preact/hooks";
import { api } from "../api";
import type { Me } from "../api";
import { ErrorLine, useAction } from "../components/Dialog";

export function Register(props: { onDone: (me: Me) => void }) {
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
    </main>
  );
}
