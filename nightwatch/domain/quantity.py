"""Kubernetes resource quantities ("500m", "1Gi", "2", "1.5"), read as the API server reads them.

Hand-written: the domain imports only the standard library, so neither the official client's
``kubernetes.utils.parse_quantity`` nor any other package can be used here. It follows the
grammar of ``k8s.io/apimachinery/pkg/api/resource/quantity.go``::

    <quantity>        ::= <signedNumber><suffix>
    <signedNumber>    ::= <number> | <sign><number>
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <sign>            ::= "+" | "-"
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= m | "" | k | M | G | T | P | E
    <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>

narrowed as the API server's parser narrows it: the exponent is a whole number
(``strconv.ParseInt``), so ``1e1.5`` is refused -- here of at most 15 digits (the API server
caps such values anyway). No whitespace is allowed around a quantity.
"""

from __future__ import annotations

import math
import re
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE]|[eE][+-]?[0-9]{1,15})?",
    re.ASCII,
)
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}  # powers of two
_DECIMAL = {"m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}  # powers of ten
# Enough digits that comparing two quantities from a 64 KiB spec is exact in every sane case;
# an exponent of at most 15 digits keeps every value far inside its exponent range.
_CONTEXT = Context(prec=200, Emax=MAX_EMAX, Emin=MIN_EMIN)


class QuantityError(ValueError):
    """Not a Kubernetes quantity."""


def quantity_text(value: object) -> str:
    """The text of a JSON quantity: a string as written, a number as JSON would print it."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError("not a string or a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError("not a finite number")
        return repr(value)  # 1.5, 1e+16, 1e-07: all in the grammar
    return str(value)


def parse_quantity(text: str) -> Decimal:
    """The value of a quantity ("1Gi" -> 1073741824, "500m" -> 0.5). QuantityError if malformed."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError(f"{text!r} does not follow the Kubernetes quantity grammar")
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix in _BINARY:
        return _CONTEXT.multiply(number, Decimal(2 ** _BINARY[suffix]))
    exponent = _DECIMAL[suffix] if suffix in _DECIMAL else int(suffix[1:])
    return _CONTEXT.scaleb(number, Decimal(exponent))
