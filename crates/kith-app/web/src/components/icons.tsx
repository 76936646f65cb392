// Icons as inline SVG: no font or file needed.

export function ClockIcon(props: { label?: string }) {
  return (
    <svg class="icon-svg" viewBox="0 0 16 16" aria-hidden={props.label ? undefined : "true"} role={props.label ? "img" : undefined} aria-label={props.label}>
      <circle cx="8" cy="8" r="6.5" fill="none" stroke="currentColor" stroke-width="1.5" />
      <path d="M8 4.5V8l2.5 1.5" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linecap="round" />
    </svg>
  );
}

export function GroupIcon() {
  return (
    <svg class="icon-svg" viewBox="0 0 16 16" aria-hidden="true">
      <circle cx="5.5" cy="5.5" r="2.5" fill="currentColor" />
      <circle cx="11" cy="6" r="2" fill="currentColor" opacity="0.7" />
      <path d="M1 14c0-3 2-4.5 4.5-4.5S10 11 10 14z" fill="currentColor" />
      <path d="M10.5 9.5c2 0 4.5 1 4.5 4.5h-4" fill="currentColor" opacity="0.7" />
    </svg>
  );
}
