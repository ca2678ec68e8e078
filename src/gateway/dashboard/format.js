// Figures as the ledger sends them: decimal strings ("-1234.50"). They are shown digit for digit
// and, where the page must add them (the charts' running totals), added exactly with BigInt in
// minor units. Binary floating point is used only to turn an amount into a bar's height in pixels.

const decimalPattern = /^(-?)(\d+)(?:\.(\d+))?$/;

// "-1234.50" -> {units: -123450n, scale: 2}; null when the text is not a plain decimal.
export function parseDecimal(text) {
  if (text === null || text === undefined) return null;
  const match = decimalPattern.exec(String(text).trim());
  if (!match) return null;
  const fraction = match[3] || "";
  const magnitude = BigInt(match[2] + fraction);
  return { units: match[1] ? -magnitude : magnitude, scale: fraction.length };
}

function rescale(decimal, scale) {
  return decimal.units * 10n ** BigInt(scale - decimal.scale);
}

export function decimalToString(decimal) {
  const negative = decimal.units < 0n;
  let digits = (negative ? -decimal.units : decimal.units).toString();
  if (decimal.scale > 0) {
    digits = digits.padStart(decimal.scale + 1, "0");
    digits = `${digits.slice(0, -decimal.scale)}.${digits.slice(-decimal.scale)}`;
  }
  return (negative ? "-" : "") + digits;
}

// The exact sum of decimal strings, with the largest number of fraction digits among them.
export function addDecimals(texts) {
  const decimals = texts.map(parseDecimal).filter((decimal) => decimal !== null);
  const scale = Math.max(0, ...decimals.map((decimal) => decimal.scale));
  const units = decimals.reduce((total, decimal) => total + rescale(decimal, scale), 0n);
  return decimalToString({ units, scale });
}

export function negateDecimal(text) {
  const decimal = parseDecimal(text);
  return decimal === null ? text : decimalToString({ units: -decimal.units, scale: decimal.scale });
}

export function isZero(text) {
  const decimal = parseDecimal(text);
  return decimal !== null && decimal.units === 0n;
}

// For a chart's geometry only, never for a figure that is shown.
export function toNumber(text) {
  const number = Number(text);
  return Number.isFinite(number) ? number : 0;
}

// "1234567.5" -> "1,234,567.5" (the sign and the fraction kept as they are).
export function groupDigits(text) {
  const match = decimalPattern.exec(String(text).trim());
  if (!match) return String(text);
  const grouped = match[2].replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return match[1] + grouped + (match[3] !== undefined ? `.${match[3]}` : "");
}

const currencyPatterns = new Map();

// How English writes an amount in this currency, e.g. ["$", ""] or ["CHF ", ""]: the currency
// symbol and spacing around the number, taken from Intl; the digits themselves stay ours.
function currencyAffixes(currency) {
  if (currencyPatterns.has(currency)) return currencyPatterns.get(currency);
  let affixes = [`${currency} `, ""];
  try {
    const parts = new Intl.NumberFormat("en", { style: "currency", currency }).formatToParts(1);
    const numeric = new Set(["integer", "group", "decimal", "fraction"]);
    const first = parts.findIndex((part) => numeric.has(part.type));
    let last = first;
    while (last + 1 < parts.length && numeric.has(parts[last + 1].type)) last += 1;
    const text = (slice) => slice.map((part) => part.value).join("");
    affixes = [text(parts.slice(0, first)), text(parts.slice(last + 1))];
  } catch {
    // An unknown currency code: fall back to "XYZ 1,234.00".
  }
  currencyPatterns.set(currency, affixes);
  return affixes;
}

export function formatMoney(text, currency) {
  if (text === null || text === undefined) return "—";
  const decimal = parseDecimal(text);
  if (decimal === null) return String(text);
  const negative = decimal.units < 0n;
  const digits = groupDigits(negative ? String(text).trim().slice(1) : String(text).trim());
  const [before, after] = currency ? currencyAffixes(currency) : ["", ""];
  return `${negative ? "-" : ""}${before}${digits}${after}`;
}

// A ratio string ("0.253") as a percentage ("25.3 %"): the decimal point moved two places.
export function formatPercent(text) {
  if (text === null || text === undefined) return "—";
  const decimal = parseDecimal(text);
  if (decimal === null) return String(text);
  const percent =
    decimal.scale >= 2
      ? { units: decimal.units, scale: decimal.scale - 2 }
      : { units: decimal.units * 10n ** BigInt(2 - decimal.scale), scale: 0 };
  return `${groupDigits(decimalToString(percent))} %`;
}

export function formatDays(text) {
  if (text === null || text === undefined) return "—";
  return `${groupDigits(text)} days`;
}

export function formatRatio(text) {
  if (text === null || text === undefined) return "—";
  return `${groupDigits(text)} ×`;
}

export function formatCount(value) {
  if (value === null || value === undefined) return "—";
  return groupDigits(String(value));
}
