/** One number with its label, in a row of `.stats`. */
export function Stat({ label, value, cls, testId }: { label: string; value: string; cls?: string; testId?: string }) {
  return (
    <div class={`stat ${cls ?? ''}`} data-testid={testId}>
      <span class="stat-label">{label}</span>
      <span class="stat-value">{value}</span>
    </div>
  );
}
