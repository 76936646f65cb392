// The "Devices" part of Settings: this account's devices, with names (the account's own) and
// when each was last seen; a device is named here.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import type { Device } from "../api";
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
              </>
            )}
          </li>
        ))}
      </ul>
      <ErrorLine error={error} />
    </>
  );
}
