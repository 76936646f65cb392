// The Kith app's page: registration on a first run, then the chat list, the open chat (live
// over /live), and dialogs for everything else `kith` does. Text from others is only ever
// rendered as text (JSX escapes it); nothing is loaded from anywhere but the local app.
import { render } from "preact";
import { useEffect, useErrorBoundary, useState } from "preact/hooks";
import { api } from "./api";
import type { Me } from "./api";
import { messageOf } from "./format";
import { Messenger } from "./screens/Messenger";
import { Register, RecoveryCodeShown } from "./screens/Register";
import "./styles.css";

function Root() {
  const [me, setMe] = useState<Me | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [crash, reset] = useErrorBoundary();
  // A recovery code the app made (registration, recovery, or a migration): shown once.
  const [code, setCode] = useState<string | null>(null);
  const take = (m: Me) => {
    if (m.recovery_code) setCode(m.recovery_code);
    setMe(m);
  };
  useEffect(() => {
    api.me().then(take, (e) => setError(messageOf(e)));
    const fresh = () => void api.me().then(take, () => undefined);
    window.addEventListener("kith:recovery-code", fresh);
    return () => window.removeEventListener("kith:recovery-code", fresh);
  }, []);
  // The page's first useful render, for `npm run perf`.
  useEffect(() => {
    if (me && performance.getEntriesByName("kith:first-render").length === 0) {
      performance.mark("kith:first-render");
    }
  }, [me]);
  if (crash) {
    return (
      <main class="register">
        <h1>Something went wrong on this page</h1>
        <p role="alert">{messageOf(crash)}</p>
        <button onClick={reset}>Try again</button>
      </main>
    );
  }
  if (error) {
    return (
      <main class="register">
        <h1>Kith</h1>
        <p role="alert">{error}</p>
      </main>
    );
  }
  if (!me) return <main class="register" aria-busy="true" />;
  if (code) return <RecoveryCodeShown code={code} onDone={() => setCode(null)} />;
  return me.registered ? <Messenger me={me} /> : <Register onDone={take} />;
}

const root = document.getElementById("root");
if (root) render(<Root />, root);
