"""Money: `Decimal` amounts with the currency's minor digits, never float.

Amounts cross every boundary as decimal strings ("1200.00"). Inside, they are `Decimal`. Figures are
computed in full precision and rounded to the minor unit only when reported (`quantize`).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# ISO 4217 minor digits. Currencies not listed have 2 (the ISO default for most active codes).
_minor_digits_exceptions: dict[str, int] = {
    # zero decimals
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    # three decimals
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
    # four decimals
    "CLF": 4,
    "UYW": 4,
}

# Active ISO 4217 codes (2025). An unknown code is rejected: a typo in a currency is a money error.
iso_4217_codes: frozenset[str] = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BOV",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHE",
        "CHF",
        "CHW",
        "CLF",
        "CLP",
        "CNY",
        "COP",
        "COU",
        "CRC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MXV",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "USN",
        "UYI",
        "UYU",
        "UYW",
        "UZS",
        "VED",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XCG",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWG",
    ]
)

# The largest amount one event may carry: 10^15 minor-unit-scaled units is beyond any real invoice
# and keeps every sum of a tenant's history far inside Decimal's default 28-digit context.
amount_integer_digits_max = 15

_decimal_pattern = re.compile(r"^(0|[1-9][0-9]*)(?:\.([0-9]+))?$")


def minor_digits(currency: str) -> int:
    return _minor_digits_exceptions.get(currency, 2)


class MoneyFormatError(ValueError):
    """A money string that is not a plain non-negative decimal with the allowed digits."""


class MoneyDigitsError(MoneyFormatError):
    """A well-formed money string with more fraction digits than allowed."""


def parse_amount(text: str, digits_max: int) -> Decimal:
    """Parse a non-negative decimal string with at most `digits_max` fraction digits.

    Rejects exponents, signs, spaces, "NaN", and more fraction digits than the currency has:
    silently rounding a publisher's amount would change money.
    """
    # fullmatch: `$` alone also matches before a trailing newline, and Decimal() ignores whitespace.
    match = _decimal_pattern.fullmatch(text)
    if match is None:
        if text.startswith("-"):
            raise MoneyFormatError("must not be negative")
        raise MoneyFormatError('must be a plain decimal string such as "1200.00"')
    integer_part, fraction_part = match.group(1), match.group(2) or ""
    if len(integer_part) > amount_integer_digits_max:
        raise MoneyFormatError(f"must be below 10^{amount_integer_digits_max}")
    if len(fraction_part) > digits_max:
        raise MoneyDigitsError(
            f"has {len(fraction_part)} decimal places; at most {digits_max} allowed"
        )
    try:
        return Decimal(text)
    except InvalidOperation as error:  # unreachable after the pattern, kept as a wall
        raise MoneyFormatError("is not a decimal number") from error


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_digits(currency))


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit (banker's rounding, as accounting systems report)."""
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_EVEN)


def format_amount(amount: Decimal, currency: str) -> str:
    """The wire form: exactly the currency's minor digits, no exponent."""
    return f"{quantize(amount, currency):f}"
