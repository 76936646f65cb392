// The "Devices" part of Settings: this account's devices, with names (the account's own) and
// when each was last seen; a device is named or removed here, and a new one linked (a
// one-time code and its QR code, for `kith register --link` or another app's welcome page).
import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import type { Device, LinkOffered, LinkProgress } from "../api";
import { ErrorLine, useAction } from "../components/Dialog";
import { when } from "../format";

export function Devices() {
  const [devices, setDevices] = useState<Device[]>([]);
  const [editing, setEditing] = useState<number | null>(null);
  const [name, setName] = useState("");
  const { busy, error, run } = useAction();
  useEffect(() => void run(async () => setDevices(await api.devices())), [run]);
  const save = (id: number) =>
    run(async () => {
      setDevices(await api.renameDevice(id, name.trim() || null));
      setEditing(null);
    });
  const remove = (d: Device) => {
    const label = d.name ?? `device ${d.id}`;
    if (!confirm(`Remove ${label}? It stops working at once and leaves every conversation.`)) return;
    void run(async () => setDevices(await api.removeDevice(d.id)));
  };
  return (
    <>
      <h3>Devices</h3>
      <ul aria-label="Devices" class="plain">
        {devices.map((d) => (
          <li key={d.id}>
            {editing === d.id ? (
              <form
                onSubmit={(e) => {
                  e.preventDefault();
                  void save(d.id);
                }}
              >
                <input
                  aria-label={`Name of device ${d.id}`}
                  value={name}
                  maxLength={64}
                  onInput={(e) => setName(e.currentTarget.value)}
                />{" "}
                <button type="submit" class="primary" disabled={busy}>
                  Save
                </button>{" "}
                <button type="button" onClick={() => setEditing(null)}>
                  Cancel
                </button>
              </form>
            ) : (
              <>
                <strong>{d.name ?? "(no name)"}</strong>
                {d.this_device && " (this device)"}
                <span class="meta">
                  {" "}
                  added {when(d.created_at)}
                  {d.last_seen !== null ? `, last seen ${when(d.last_seen)}` : ""}
                </span>{" "}
                <button
                  aria-label={`Rename device ${d.id}`}
                  onClick={() => {
                    setName(d.name ?? "");
                    setEditing(d.id);
                  }}
                >
                  Rename
                </button>
                {!d.this_device && (
                  <>
                    {" "}
                    <button aria-label={`Remove device ${d.id}`} onClick={() => remove(d)}>
                      Remove
                    </button>
                  </>
                )}
              </>
            )}
          </li>
        ))}
      </ul>
      <ErrorLine error={error} />
      <LinkDevice onLinked={() => void run(async () => setDevices(await api.devices()))} />
    </>
  );
}

/** "Link a new device": the code and its QR code, then how the linking goes. */
function LinkDevice(props: { onLinked: () => void }) {
  const [offer, setOffer] = useState<LinkOffered | null>(null);
  const [progress, setProgress] = useState<LinkProgress | null>(null);
  const { busy, error, run } = useAction();
  useEffect(() => {
    if (!offer) return;
    let stop = false;
    const tick = async () => {
      const p = await api.linkProgress().catch(() => null);
      if (stop) return;
      if (p) setProgress(p);
      if (p && (p.state === "linked" || p.state === "failed")) {
        if (p.state === "linked") props.onLinked();
        return;
      }
      setTimeout(tick, 700);
    };
    void tick();
    return () => {
      stop = true;
    };
  }, [offer]);
  const state = progress?.state ?? "waiting";
  return (
    <section aria-label="Link a device">
      {!offer || state === "linked" || state === "failed" ? (
        <button
          class="primary"
          disabled={busy}
          onClick={() =>
            void run(async () => {
              setProgress(null);
              setOffer(await api.offerLink());
            })
          }
        >
          Link a new device
        </button>
      ) : null}
      <ErrorLine error={error} />
      {offer && state === "waiting" && (
        <div class="link-offer">
          <p>
            On the new device, choose “Link to an existing account” and scan this code or type it (or run{" "}
            <code>kith register --link CODE</code>). It works once, for ten minutes.
          </p>
          <div class="qr" role="img" aria-label="Link QR code" dangerouslySetInnerHTML={{ __html: offer.qr_svg }} />
          <p>
            <code aria-label="Link code">{offer.code}</code>
          </p>
          <p class="meta">Waiting for the new device…</p>
        </div>
      )}
      {state === "adding" && (
        <p role="status">
          Device {progress?.device_id} joined; adding it to your conversations ({progress?.done ?? 0}/
          {progress?.total ?? 0})…
          <progress max={Number(progress?.total ?? 0) || 1} value={Number(progress?.done ?? 0)} />
        </p>
      )}
      {state === "linked" && (
        <p role="status">
          Linked device {progress?.device_id}: added to {progress?.total} conversations.
        </p>
      )}
      {state === "failed" && <p role="alert">Not linked: {progress?.error}</p>}
    </section>
  );
}
