"""Compares DICOM objects element by element with pydicom, for the interop tests.

usage: pydicom_compare.py            (pairs "ORIGINAL<TAB>STORED" on stdin, one per line)

For each pair, every element of the data set (group 0002 aside) must be in both, with equal
values: raw value bytes compared in little-endian order (a big-endian original's numbers are
swapped by the size its VR gives), one trailing pad byte (NUL or space) tolerated where the
original value had odd length, sequences compared item by item, encapsulated pixel data
fragment by fragment. The stored object's transfer syntax may differ (that is the point).

Prints "SAME <original>" or "DIFF <original>: what differs" per pair; exits 1 if any differ.
"""
import sys

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.sequence import Sequence

SWAP = {"US": 2, "SS": 2, "OW": 2, "AT": 2, "UL": 4, "SL": 4, "FL": 4, "OF": 4, "OL": 4,
        "FD": 8, "OD": 8, "SV": 8, "UV": 8, "OV": 8}
ITEM = b"\xfe\xff\x00\xe0"
SEQ_END = b"\xfe\xff\xdd\xe0"


def little(raw: bytes, vr, big_endian: bool) -> bytes:
    unit = SWAP.get(vr or "", 1)
    if not big_endian or unit == 1:
        return raw
    whole = len(raw) - len(raw) % unit
    out = bytearray()
    for i in range(0, whole, unit):
        out += raw[i:i + unit][::-1]
    return bytes(out + raw[whole:])


def fragments(raw: bytes):
    out, at = [], 0
    while at + 8 <= len(raw):
        tag, length = raw[at:at + 4], int.from_bytes(raw[at + 4:at + 8], "little")
        if tag == SEQ_END:
            break
        if tag != ITEM:
            return None
        out.append(raw[at + 8:at + 8 + length])
        at += 8 + length
    return out


def same_bytes(a: bytes, b: bytes) -> bool:
    if a == b:
        return True
    # an odd value sent padded to even length
    if len(a) % 2 == 1 and len(b) == len(a) + 1 and b[:-1] == a and b[-1:] in (b"\0", b" "):
        return True
    # a text value whose pad byte changed (NUL and space both pad)
    return a.rstrip(b"\0 ") == b.rstrip(b"\0 ") and abs(len(a) - len(b)) <= 1


def raw_of(ds, tag):
    el = ds.get_item(tag)
    if isinstance(el, RawDataElement):
        return el.VR, el.value if el.value is not None else b"", el.is_little_endian
    return None


def compare(a, b, path, out):
    tags_a = {t for t in a.keys() if t.group != 0x0002}
    tags_b = {t for t in b.keys() if t.group != 0x0002}
    for t in sorted(tags_a ^ tags_b):
        out.append(f"{path}{t}: only in {'original' if t in tags_a else 'stored'}")
    for t in sorted(tags_a & tags_b):
        ra, rb = raw_of(a, t), raw_of(b, t)
        if is_seq(a, t) or is_seq(b, t):
            sa, sb = a[t].value, b[t].value
            if not isinstance(sa, Sequence) or not isinstance(sb, Sequence):
                out.append(f"{path}{t}: sequence on one side only")
                continue
            if len(sa) != len(sb):
                out.append(f"{path}{t}: {len(sa)} items vs {len(sb)}")
                continue
            for i, (ia, ib) in enumerate(zip(sa, sb)):
                compare(ia, ib, f"{path}{t}[{i}].", out)
            continue
        if ra is not None and rb is not None:
            bytes_a = little(ra[1], ra[0], not ra[2])
            bytes_b = little(rb[1], rb[0], not rb[2])
            if bytes_a[:4] == ITEM or bytes_b[:4] == ITEM:
                fa, fb = fragments(bytes_a), fragments(bytes_b)
                if fa is not None and fb is not None and len(fa) == len(fb) and all(
                    same_bytes(x, y) for x, y in zip(fa, fb)
                ):
                    continue
            if not same_bytes(bytes_a, bytes_b):
                out.append(f"{path}{t}: {bytes_a[:32]!r} vs {bytes_b[:32]!r}")
            continue
        va, vb = a[t].value, b[t].value
        if text(va) != text(vb):
            out.append(f"{path}{t}: {va!r} vs {vb!r}")


def text(v) -> str:
    """A decoded value as text; an empty value (None, '', b'') is ''."""
    if v is None or v == b"" or v == "":
        return ""
    return str(v).rstrip("\0 ")


def is_seq(ds, tag):
    el = ds.get_item(tag)
    if isinstance(el, RawDataElement):
        if el.VR == "SQ":
            return True
        if el.value is None or el.length == 0xFFFFFFFF:
            return isinstance(ds[tag].value, Sequence)
        return False
    return isinstance(el.value, Sequence)


def main() -> int:
    failed = 0
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            continue
        original, stored = line.split("\t")
        try:
            a = pydicom.dcmread(original, force=True)
            b = pydicom.dcmread(stored, force=True)
            out = []
            compare(a, b, "", out)
        except Exception as e:  # an unreadable file is a difference, reported
            out = [f"cannot compare: {type(e).__name__}: {e}"]
        if out:
            failed += 1
            print(f"DIFF {original}: " + "; ".join(out[:8]))
        else:
            print(f"SAME {original}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
