// The first run: registering a username on a server (keys are made here, on this computer).
import { useState } from "preact/hooks";
import { api } from "../api";
import type { Me } from "../api";
import { ErrorLine, useAction } from "../components/Dialog";

export function Register(props: { onDone: (me: Me) => void }) {
  const [mode, setMode] = useState<"new" | "link" | "recover">("new");
  if (mode === "link") return <LinkHere onDone={props.onDone} onBack={() => setMode("new")} />;
  if (mode === "recover") return <RecoverHere onDone={props.onDone} onBack={() => setMode("new")} />;
  return <NewAccount onDone={props.onDone} onLink={() => setMode("link")} onRecover={() => setMode("recover")} />;
}

/** A recovery code, shown once: the person writes it down before going on. */
export function RecoveryCodeShown(props: { code: string; onDone: () => void }) {
  return (
    <main class="register">
      <h1>Your recovery code</h1>
      <p>
        Write it down and keep it away from your devices. It is shown only now, and nothing on this
        computer keeps it. With it you take your account back if you lose every device, or if
        someone else has a copy of one.
      </p>
      <p>
        <code class="recovery-code" aria-label="Recovery code">
          {props.code}
        </code>
      </p>
      <button class="primary" type="button" onClick={props.onDone}>
        I wrote it down
      </button>
    </main>
  );
}

/** "Take your account back": this computer becomes the account's only device, with the
 * recovery code (every other device is removed at once). */
function RecoverHere(props: { onDone: (me: Me) => void; onBack: () => void }) {
  const [username, setUsername] = useState("");
  const [server, setServer] = useState("http://127.0.0.1:8420");
  const [code, setCode] = useState("");
  const { busy, error, run } = useAction();
  return (
    <main class="register">
      <h1>Take your account back</h1>
      <p>
        With the recovery code you wrote down, this computer becomes your account's only device:
        every other device — a lost one, or someone's copy — stops working at once. Your contacts'
        apps put this one in your conversations; the history stays on the old devices.
      </p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          run(async () => props.onDone(await api.recover(username, server, code)));
        }}
      >
        <label>
          Username
          <input aria-label="Username" value={username} onInput={(e) => setUsername(e.currentTarget.value)} />
        </label>
        <label>
          Server
          <input aria-label="Server address" value={server} onInput={(e) => setServer(e.currentTarget.value)} />
        </label>
        <label>
          Recovery code
          <input
            aria-label="Recovery code"
            value={code}
            placeholder="XXXX-XXXX-XXXX-XXXX-XXXX-XXXX"
            autocomplete="off"
            onInput={(e) => setCode(e.currentTarget.value)}
          />
        </label>
        <ErrorLine error={error} />
        <button class="primary" type="submit" disabled={busy || !username.trim() || !code.trim()}>
          {busy ? "Taking it back…" : "Take my account back"}
        </button>{" "}
        <button type="button" onClick={props.onBack} disabled={busy}>
          Back
        </button>
      </form>
    </main>
  );
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

function NewAccount(props: { onDone: (me: Me) => void; onLink: () => void; onRecover: () => void }) {
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
      <p>
        Lost every device, or someone has a copy of one?{" "}
        <button type="button" onClick={props.onRecover}>
          Take your account back
        </button>
      </p>
    </main>
  );
}
