// A safety number with a contact: sixty digits and a QR code, the same on both sides. Compare
// them in person (or scan their code: with the camera, or from a picture of it), then mark the
// contact verified. A verified contact whose key changes stops messages until it is looked at.
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../api";
import type { Safety } from "../api";
import { Dialog, ErrorLine, useAction } from "../components/Dialog";

/** The QR decoder, loaded the first time a code is scanned (it is most of the page's weight). */
type Decoder = (typeof import("jsqr"))["default"];
let decoder: Promise<Decoder> | null = null;
const loadDecoder = () => (decoder ??= import("jsqr").then((m) => m.default));

/** The text of the QR code in `source` (a video frame or a picture), if it holds one. */
function readCode(jsQR: Decoder, source: CanvasImageSource, width: number, height: number): string | null {
  if (!width || !height) return null;
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  if (!ctx) return null;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(source, 0, 0, width, height);
  const pixels = ctx.getImageData(0, 0, width, height);
  return jsQR(pixels.data, width, height)?.data ?? null;
}

async function readPicture(file: File): Promise<string | null> {
  // Decoded off the page (a blob: image would need the Content-Security-Policy to allow it).
  const picture = await createImageBitmap(file);
  try {
    return readCode(await loadDecoder(), picture, picture.width, picture.height);
  } finally {
    picture.close();
  }
}

export function SafetyNumber(props: { user: string; onClose: () => void; onChanged: () => void }) {
  const [safety, setSafety] = useState<Safety | null>(null);
  const [camera, setCamera] = useState(false);
  const [done, setDone] = useState<string | null>(null);
  const video = useRef<HTMLVideoElement>(null);
  const { busy, error, run, setError } = useAction();
  useEffect(() => void run(async () => setSafety(await api.safety(props.user))), [run, props.user]);

  const confirm = (scanned: string | null) =>
    run(async () => {
      setSafety(await api.confirmSafety(props.user, scanned));
      setDone(scanned ? "Their code matches: verified." : "Marked as verified.");
      props.onChanged();
    });

  // The camera, while asked for: each frame is read until one holds a code.
  useEffect(() => {
    if (!camera) return;
    let stream: MediaStream | null = null;
    let stopped = false;
    let jsQR: Decoder | null = null;
    const look = () => {
      const v = video.current;
      if (stopped || !v) return;
      const text = jsQR && v.readyState >= 2 ? readCode(jsQR, v, v.videoWidth, v.videoHeight) : null;
      if (text) {
        setCamera(false);
        void confirm(text);
      } else {
        requestAnimationFrame(look);
      }
    };
    if (!navigator.mediaDevices) {
      setCamera(false);
      setError("No camera can be used on this page: choose a picture of their code instead.");
      return;
    }
    void loadDecoder().then((d) => (jsQR = d));
    navigator.mediaDevices
      .getUserMedia({ video: { facingMode: "environment" } })
      .then((s) => {
        stream = s;
        if (video.current) {
          video.current.srcObject = s;
          void video.current.play();
        }
        look();
      })
      .catch(() => {
        setCamera(false);
        setError("No camera could be used here: choose a picture of their code instead.");
      });
    return () => {
      stopped = true;
      stream?.getTracks().forEach((t) => t.stop());
    };
  }, [camera]);

  return (
    <Dialog title={`Safety number with ${props.user}`} onClose={props.onClose}>
      {safety && (
        <div class="safety">
          {safety.changed && (
            <p class="warning" role="alert">
              {props.user}’s safety number changed since you verified them: their account key is new. Nothing
              is sent to them until you compare this new number with them.
            </p>
          )}
          <p class="safety-digits" aria-label="Safety number">
            {safety.shown.split(" ").map((g, i) => (
              <span key={i}>{g}</span>
            ))}
          </p>
          <div class="qr" aria-label="Your safety number as a QR code" dangerouslySetInnerHTML={{ __html: safety.qr_svg }} />
          {safety.verified ? (
            <p class="verified-line">
              <span class="verified" aria-hidden="true">
                ✓
              </span>{" "}
              Verified: you compared this number with {props.user}.
            </p>
          ) : (
            <p class="meta">
              Not verified. Compare the numbers with {props.user} in person — the same sixty digits on both
              sides — or scan their code.
            </p>
          )}
          {done && <p role="status">{done}</p>}
          {camera && <video ref={video} class="scanner" muted playsInline aria-label="Camera" />}
          <div class="actions">
            {!safety.verified && (
              <button class="primary" disabled={busy} onClick={() => void confirm(null)}>
                The numbers match: mark as verified
              </button>
            )}
            <button disabled={busy} onClick={() => setCamera((c) => !c)}>
              {camera ? "Stop the camera" : "Scan their code"}
            </button>
            <label class="button">
              Choose a picture of their code
              <input
                type="file"
                accept="image/*"
                aria-label="A picture of their code"
                class="visually-hidden"
                onChange={(e) => {
                  const file = e.currentTarget.files?.[0];
                  e.currentTarget.value = "";
                  if (!file) return;
                  void run(async () => {
                    const text = await readPicture(file);
                    if (!text) throw new Error("No QR code could be read in that picture.");
                    await api.confirmSafety(props.user, text).then((s) => {
                      setSafety(s);
                      setDone("Their code matches: verified.");
                      props.onChanged();
                    });
                  });
                }}
              />
            </label>
            {safety.verified && (
              <button
                disabled={busy}
                onClick={() =>
                  run(async () => {
                    await api.clearSafety(props.user);
                    setSafety(await api.safety(props.user));
                    setDone(null);
                    props.onChanged();
                  })
                }
              >
                Take the verification back
              </button>
            )}
          </div>
        </div>
      )}
      <ErrorLine error={error} />
    </Dialog>
  );
}
