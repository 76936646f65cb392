// Whether this browser may show notifications, and asking for it (from Settings).
import { useState } from "preact/hooks";

export function notifyState(): NotificationPermission | "unsupported" {
  return typeof Notification === "undefined" ? "unsupported" : Notification.permission;
}

export function useNotify() {
  const [notify, setNotify] = useState(notifyState());
  const askNotify = async () => {
    if (typeof Notification !== "undefined") setNotify(await Notification.requestPermission());
  };
  return { notify, askNotify };
}
