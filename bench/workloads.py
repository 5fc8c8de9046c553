"""Signed test plugins for the benchmark, built with atomicplug's own packer.

Each size is one plugin: backend Python (compiled to .pyc by atomicplug),
frontend text (TypeScript, CSS) and incompressible binary assets (random
bytes), plus SQL migrations. The mix by bytes is ~5 % Python, ~45 % other
text, ~50 % random. Versions: 1.0.0; 2.0.0, every file different and a second
migration (upgrade, rollback); and a chain 1.0.1, 1.0.2, … each differing from
the one before in 1 % of its files (:func:`build_chain`: the upgrade that
should cost what changed, and the disk used by many versions).
Zips are cached in the work folder by a key of their parameters, so a second
run with the same ``--workdir`` skips the (slow, deflate level 9) packing.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import attrs

from atomicplug.testing import KeyPair, PluginSpec, build_package, make_keypair

__all__ = ["CHANGED_FRACTION", "SIZES", "Workload", "build_chain", "build_workload", "build_fillers", "changed_files", "keypair"]

#: name → (number of files, total bytes)
SIZES: dict[str, tuple[int, int]] = {
    "tiny": (8, 16 * 1024),  # for the smoke test only
    "small": (20, 100 * 1024),
    "medium": (500, 10 * 1024 * 1024),
    "large": (5000, 100 * 1024 * 1024),
}
#: Share of the files each version of the chain changes from the one before.
CHANGED_FRACTION = 0.01

_WORDS = (
    "invoice customer payment amount currency subscription plan period renew cancel refund tax rate "
    "discount coupon gateway webhook status pending paid overdue draft total subtotal line item quantity "
    "price product service account address email notify template render component route props state "
    "effect memo callback fetch response request header token session user role permission admin panel"
).split()


@attrs.frozen
class Workload:
    size: str
    plugin_id: str
    v1: Path
    v2: Path
    v1_1pct: Path  # 1.0.1: 1 % of v1's files changed, same migrations
    files: int
    total_bytes: int
    changed_files: int  # how many files v1_1pct changes


def keypair(workdir: Path) -> KeyPair:
    """One publisher key for every package of the run (reused from the work folder)."""
    from atomicplug.minisign import SecretKey

    folder = workdir / "keys"
    pub, sec = folder / "publisher.pub", folder / "publisher.key"
    if pub.is_file() and sec.is_file():
        return KeyPair(secret=SecretKey.load(sec), public_path=pub, secret_path=sec)
    return make_keypair(folder)


def _text_pool(rng: random.Random, size: int = 1 << 20) -> str:
    """About ``size`` characters of word salad: compresses like real source (~3-4:1)."""
    lines = []
    total = 0
    while total < size:
        line = "  ".join(" ".join(rng.choices(_WORDS, k=rng.randint(3, 12))) for _ in range(rng.randint(1, 3)))
        line += f" {rng.randint(0, 10**6)}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)


def _slice(pool: str, rng: random.Random, n: int) -> str:
    if n >= len(pool):
        return (pool * (n // len(pool) + 1))[:n]
    start = rng.randrange(0, len(pool) - n)
    return pool[start : start + n]


def _python_source(rng: random.Random, pool: str, n: int, index: int) -> str:
    """Valid Python of about ``n`` characters."""
    parts = [f'"""Module {index} of the benchmark plugin."""\n\n']
    size = len(parts[0])
    j = 0
    while size < n:
        text = _slice(pool, rng, rng.randint(40, 200)).replace("\\", " ").replace('"', " ").replace("\n", " ")
        chunk = (
            f"def handler_{index}_{j}(amount, rate={rng.randint(1, 99)}):\n"
            f'    """{text}"""\n'
            f"    total = amount * rate + {rng.randint(0, 9999)}\n"
            f"    return {{'total': total, 'label': {text[:60]!r}}}\n\n\n"
        )
        parts.append(chunk)
        size += len(chunk)
        j += 1
    return "".join(parts)


def _files(size: str, version: str, seed: int) -> dict[str, str | bytes]:
    count, total = SIZES[size]
    rng = random.Random(seed)
    pool = _text_pool(rng, min(1 << 20, max(64 * 1024, total)))
    n_py = max(2, count * 20 // 100)
    n_bin = max(1, count * 30 // 100)
    n_text = max(1, count - n_py - n_bin)
    b_py, b_text = total * 5 // 100, total * 45 // 100
    b_bin = total - b_py - b_text
    files: dict[str, str | bytes] = {}
    for i in range(n_py):
        if i == 0:
            name = "backend/__init__.py"
        else:
            folder = f"backend/mod{i // 50:03d}"
            files.setdefault(f"{folder}/__init__.py", "")
            name = f"{folder}/m{i:05d}.py"
        files[name] = _python_source(rng, pool, b_py // n_py, i) + f'VERSION = "{version}"\n'
    for i in range(n_text):
        ext = ("ts", "tsx", "css", "json", "md")[i % 5]
        files[f"frontend/src/part{i // 100:03d}/f{i:05d}.{ext}"] = _slice(pool, rng, b_text // n_text)
    files["frontend/addon.config.ts"] = f"export default {{ id: 'bench', version: '{version}', routes: [] }};\n"
    for i in range(n_bin):
        files[f"frontend/assets/a{i // 100:03d}/img{i:05d}.bin"] = rng.randbytes(b_bin // n_bin)
    return files


def _migrations(plugin_id: str, version: str) -> dict[str, tuple[str, str]]:
    table = f"{plugin_id}_items"
    rows = ",".join(f"({i}, 'item {i}', {i * 100})" for i in range(1, 51))
    migrations = {
        "0001_init": (
            f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL);\n"
            f"CREATE INDEX {table}_name ON {table} (name);\n"
            f"INSERT INTO {table} (id, name, price) VALUES {rows};\n",
            f"DROP TABLE {table};\n",
        )
    }
    if not version.startswith("1."):  # 2.0.0 adds a migration; the 1 % chain keeps v1's
        migrations["0002_settings"] = (
            f"CREATE TABLE {plugin_id}_settings (key TEXT PRIMARY KEY, value TEXT);\n"
            f"INSERT INTO {plugin_id}_settings (key, value) VALUES ('currency', 'EUR');\n",
            f"DROP TABLE {plugin_id}_settings;\n",
        )
    return migrations


def _cached_build(spec: PluginSpec, out_dir: Path, key: KeyPair, cache_key: str) -> Path:
    zip_path = out_dir / f"{spec.id}-{spec.version}.zip"
    stamp = zip_path.with_name(zip_path.name + ".key")
    sig = zip_path.with_name(zip_path.name + ".minisig")
    if zip_path.is_file() and sig.is_file() and stamp.is_file() and stamp.read_text() == cache_key:
        return zip_path
    built = build_package(spec, out_dir, key.secret)
    shutil.rmtree(out_dir / "src" / f"{spec.id}-{spec.version}", ignore_errors=True)  # keep only the zips
    stamp.write_text(cache_key)
    return built


def changed_files(files: dict[str, str | bytes], step: int) -> tuple[dict[str, str | bytes], list[str]]:
    """``files`` with CHANGED_FRACTION of them changed (text: a line appended; bytes: new random bytes of the same size).

    Deterministic in ``step``, so the chain is the same in every run. Returns the
    new files and the changed paths.
    """
    rng = random.Random(1000 + step)
    changed = sorted(rng.sample(sorted(files), max(1, round(len(files) * CHANGED_FRACTION))))
    new = dict(files)
    for name in changed:
        old = files[name]
        new[name] = old + f"\n# changed in step {step}\n" if isinstance(old, str) else rng.randbytes(len(old))
    return new, changed


def _spec(size: str, plugin_id: str, version: str, files: dict[str, str | bytes]) -> PluginSpec:
    return PluginSpec(id=plugin_id, version=version, migrations=_migrations(plugin_id, version), files=files)


def build_chain(size: str, workdir: Path, key: KeyPair, count: int, plugin_id: str | None = None) -> tuple[list[Path], int]:
    """``count`` signed versions 1.0.0, 1.0.1, … of the ``size`` plugin, each 1 % different from the one before.

    Returns the zips (cached in ``workdir/packages``) and how many files each step changes.
    """
    plugin_id = plugin_id or f"bench_{size}"
    out_dir = workdir / "packages" / size
    files = _files(size, "1.0.0", 1)
    zips = []
    changed: list[str] = []
    for step in range(count):
        if step:
            files, changed = changed_files(files, step)
        version = f"1.0.{step}"
        cache_key = json.dumps([SIZES[size], version, 1, key.public_path.read_text(), "chain", CHANGED_FRACTION, 3])
        zips.append(_cached_build(_spec(size, plugin_id, version, files), out_dir, key, cache_key))
    return zips, len(changed)


def build_workload(size: str, workdir: Path, key: KeyPair) -> Workload:
    """The signed versions 1.0.0, 1.0.1 (1 % changed) and 2.0.0 of the ``size`` plugin (cached in ``workdir/packages``)."""
    plugin_id = f"bench_{size}"
    (v1, v1_1pct), changed = build_chain(size, workdir, key, 2)
    cache_key = json.dumps([SIZES[size], "2.0.0", 2, key.public_path.read_text(), 2])
    v2 = _cached_build(_spec(size, plugin_id, "2.0.0", _files(size, "2.0.0", 2)), workdir / "packages" / size, key, cache_key)
    count, total = SIZES[size]
    return Workload(
        size=size, plugin_id=plugin_id, v1=v1, v2=v2, v1_1pct=v1_1pct, files=count, total_bytes=total, changed_files=changed
    )


def filler_id(i: int) -> str:
    """The id of the ``i``-th filler plugin (:func:`build_fillers`)."""
    return f"filler_{i:04d}"


def build_fillers(n: int, workdir: Path, key: KeyPair) -> list[Path]:
    """``n`` tiny signed plugins (one migration each) to fill an installation for the scaling runs."""
    out_dir = workdir / "packages" / "fillers"
    zips = []
    for i in range(n):
        pid = filler_id(i)
        spec = PluginSpec(
            id=pid,
            migrations={"0001_init": (f"CREATE TABLE {pid}_t (id INTEGER PRIMARY KEY, v TEXT);\n", f"DROP TABLE {pid}_t;\n")},
            files={"backend/routes.py": f"ROUTES = ['/{pid}']\n", "frontend/index.ts": f"export const id = '{pid}';\n"},
        )
        cache_key = json.dumps(["filler", i, key.public_path.read_text(), 1])
        zips.append(_cached_build(spec, out_dir, key, cache_key))
    return zips
