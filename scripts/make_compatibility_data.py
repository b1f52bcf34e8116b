"""Generate the bundled phone <-> accessory compatibility dataset.

Synthetic, built from a realistic catalogue: Apple iPhones 11-16 (and SE), Samsung Galaxy S22-S24,
S23 FE, A-series and Z Flip/Fold, Google Pixel 7-9 and OnePlus phones, each with its connector
(Lightning up to the iPhone 14, USB-C after and on every Android phone) and MagSafe support
(iPhone 12 onwards). Accessories are cases, screen protectors, camera lens protectors, cables,
headphone adapters and MagSafe chargers/wallets/mounts from real accessory brands, with the
marketing noise of marketplace titles ("[3 Pack]", "Military-Grade", "9H Hardness", Spigen's
"Ultra Hybrid" line on a case that does not fit the Galaxy Ultra, ...).

The label is a fact the two texts determine: a model-specific accessory (case, screen or lens
protector) fits the phones its title lists (some list several: the iPhone 13, 13 Pro and 14 share a
screen protector); a cable or adapter fits the phones with its connector; a MagSafe accessory fits
iPhones 12-16. Each row is one of three kinds:

- ``match``: a compatible phone (about half the rows, label 1);
- ``hard``: the right accessory type for the wrong model of the same line: a sibling (iPhone 14 Pro
  vs 14, Galaxy S23 vs S23 Ultra, Pixel 8 vs 8 Pro) or the next/previous generation, a Lightning
  cable for the USB-C iPhone 15, a MagSafe wallet for the iPhone 11 (label 0);
- ``easy``: a phone of another brand (label 0).

Rows are ``{"phone", "accessory", "type", "kind", "label"}``. No (phone, accessory) pair appears
twice, so the splits are disjoint. A fixed seed makes reruns byte-identical.

Usage::

    python scripts/make_compatibility_data.py [--out DIR] [--seed N]
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from deltatune.data import generator_parser, report_splits, write_splits

SEED = 2026
SPLIT_SIZES = {"train": 3000, "valid": 500, "test": 500}
KIND_SHARES = (("match", 0.5), ("hard", 0.3), ("easy", 0.2))
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "deltatune" / "data" / "compatibility"


@dataclass(frozen=True)
class Phone:
    brand: str  # Apple, Samsung, Google, OnePlus
    line: str  # iPhone, Galaxy S, Galaxy A, Galaxy Z Flip, Pixel, OnePlus, ...
    gen: int  # generation number within the line
    name: str  # "iPhone 14 Pro"
    screen: str  # inches
    port: str  # "Lightning" or "USB-C"
    magsafe: bool
    colors: tuple[str, ...]


def _iphones() -> list[Phone]:
    spec = [  # gen, tier, screen, colors
        (11, "", "6.1", ("Black", "Purple", "White", "(PRODUCT)RED")),
        (11, "Pro", "5.8", ("Midnight Green", "Space Gray", "Gold")),
        (11, "Pro Max", "6.5", ("Midnight Green", "Silver")),
        (12, "mini", "5.4", ("Blue", "Black", "Green")),
        (12, "", "6.1", ("Blue", "Black", "White", "Purple")),
        (12, "Pro", "6.1", ("Pacific Blue", "Graphite", "Gold")),
        (12, "Pro Max", "6.7", ("Pacific Blue", "Silver")),
        (13, "mini", "5.4", ("Midnight", "Pink", "Starlight")),
        (13, "", "6.1", ("Midnight", "Starlight", "Blue", "Pink")),
        (13, "Pro", "6.1", ("Sierra Blue", "Graphite", "Alpine Green")),
        (13, "Pro Max", "6.7", ("Sierra Blue", "Gold", "Silver")),
        (14, "", "6.1", ("Midnight", "Blue", "Purple", "Yellow")),
        (14, "Plus", "6.7", ("Midnight", "Purple", "Starlight")),
        (14, "Pro", "6.1", ("Deep Purple", "Space Black", "Gold")),
        (14, "Pro Max", "6.7", ("Deep Purple", "Space Black", "Silver")),
        (15, "", "6.1", ("Black", "Blue", "Pink", "Green")),
        (15, "Plus", "6.7", ("Black", "Yellow", "Blue")),
        (15, "Pro", "6.1", ("Natural Titanium", "Blue Titanium", "Black Titanium")),
        (15, "Pro Max", "6.7", ("Natural Titanium", "White Titanium")),
        (16, "", "6.1", ("Ultramarine", "Teal", "Black", "Pink")),
        (16, "Plus", "6.7", ("Ultramarine", "White")),
        (16, "Pro", "6.3", ("Desert Titanium", "Black Titanium")),
        (16, "Pro Max", "6.9", ("Desert Titanium", "Natural Titanium")),
    ]
    phones = [
        Phone("Apple", "iPhone", g, f"iPhone {g} {t}".strip(), s, "USB-C" if g >= 15 else "Lightning", g >= 12, c)
        for g, t, s, c in spec
    ]
    return [*phones, Phone("Apple", "iPhone SE", 3, "iPhone SE (2022)", "4.7", "Lightning", False, ("Midnight",))]


def _androids() -> list[Phone]:
    out = []
    s_colors = ("Phantom Black", "Cream", "Lavender", "Green", "Onyx Black", "Marble Gray")
    for g in (22, 23, 24):
        for tier, screen in (("", "6.1" if g < 24 else "6.2"), ("+", "6.6" if g < 24 else "6.7"), (" Ultra", "6.8")):
            out.append(Phone("Samsung", "Galaxy S", g, f"Galaxy S{g}{tier}", screen, "USB-C", False, s_colors))
    out.append(Phone("Samsung", "Galaxy S", 23, "Galaxy S23 FE", "6.4", "USB-C", False, ("Mint", "Graphite")))
    for g in (34, 35, 54, 55):
        out.append(Phone("Samsung", "Galaxy A", g, f"Galaxy A{g} 5G", "6.6", "USB-C", False, ("Awesome Navy",)))
    for line, gens, screen in (("Galaxy Z Flip", (4, 5, 6), "6.7"), ("Galaxy Z Fold", (4, 5, 6), "7.6")):
        for g in gens:
            out.append(Phone("Samsung", line, g, f"{line}{g}", screen, "USB-C", False, ("Graphite", "Mint", "Blue")))
    px_colors = ("Obsidian", "Hazel", "Porcelain", "Snow", "Bay")
    for g in (7, 8, 9):
        tiers = [("", "6.3" if g < 9 else "6.3"), (" Pro", "6.7" if g < 9 else "6.3"), ("a", "6.1")]
        if g == 9:
            tiers.append((" Pro XL", "6.8"))
        for tier, screen in tiers:
            out.append(Phone("Google", "Pixel", g, f"Pixel {g}{tier}", screen, "USB-C", False, px_colors))
    for g, tier in ((11, ""), (12, ""), (12, "R")):
        out.append(Phone("OnePlus", "OnePlus", g, f"OnePlus {g}{tier}", "6.7", "USB-C", False, ("Flowy Emerald",)))
    return out


PHONES = _iphones() + _androids()
BY_NAME = {p.name: p for p in PHONES}

# Phones that share one accessory (same body or same glass); every other phone has its own.
SHARED_FIT = {
    "case": [("iPhone 12", "iPhone 12 Pro")],
    "screen": [("iPhone 12", "iPhone 12 Pro"), ("iPhone 13", "iPhone 13 Pro", "iPhone 14"),
               ("iPhone 13 Pro Max", "iPhone 14 Plus"), ("iPhone 15", "iPhone 16"),
               ("iPhone 15 Plus", "iPhone 16 Plus")],
    "lens": [("iPhone 13", "iPhone 13 mini"), ("iPhone 14", "iPhone 14 Plus"), ("iPhone 14 Pro", "iPhone 14 Pro Max"),
             ("iPhone 15", "iPhone 15 Plus"), ("iPhone 15 Pro", "iPhone 15 Pro Max"),
             ("iPhone 16 Pro", "iPhone 16 Pro Max"), ("Galaxy S23", "Galaxy S23+"), ("Galaxy S24", "Galaxy S24+")],
}  # fmt: skip

CASE_BRANDS = {
    "Spigen": ("Ultra Hybrid", "Tough Armor", "Liquid Air", "Rugged Armor", "Thin Fit"),
    "OtterBox": ("Commuter Series", "Defender Series", "Symmetry Series", "Symmetry Clear"),
    "ESR": ("Classic Hybrid", "Cloud Soft", "Air Armor"),
    "Caseology": ("Parallax", "Nano Pop", "Athlex"),
    "Speck": ("Presidio2 Grip", "Presidio Perfect-Clear"),
    "SUPCASE": ("Unicorn Beetle Pro", "Unicorn Beetle Style"),
    "Smartish": ("Gripmunk", "Wallet Slayer Vol. 1"),
    "TORRAS": ("Shockproof", "Magnetic Slim"),
    "Casetify": ("Impact", "Mirror"),
    "Ringke": ("Fusion", "Onyx"),
}
CASE_FEATURES = ("Military-Grade Drop Protection", "Shockproof Bumper", "Slim Fit", "Anti-Yellowing",
                 "Raised Edges", "Wireless Charging Compatible", "Non-Slip Grip", "Kickstand",
                 "Heavy Duty Protective Cover", "Soft TPU", "Scratch Resistant Back")  # fmt: skip
CASE_COLORS = ("Black", "Clear", "Matte Black", "Navy Blue", "Frost Clear", "Sage Green", "Pink", "Crystal Clear")
GLASS_BRANDS = ("amFilm", "ZAGG InvisibleShield", "Supershieldz", "JETech", "Spigen", "ESR", "Ailun", "Belkin")
GLASS_FEATURES = ("Tempered Glass", "9H Hardness", "Case Friendly", "Bubble Free", "HD Clear", "Easy Installation Tray",
                  "Anti-Scratch", "Full Coverage", "Privacy Anti-Spy")  # fmt: skip
CABLE_BRANDS = ("Anker", "Belkin", "Apple", "UGREEN", "Amazon Basics", "Baseus", "INIU", "Syncwire")
MAG_BRANDS = ("Anker", "Belkin", "ESR", "Apple", "Spigen", "MOFT", "Peak Design", "iOttie")
CABLES = {  # product -> connector it needs on the phone
    "USB-C to Lightning Cable": "Lightning",
    "USB A to Lightning Cable": "Lightning",
    "Lightning to 3.5mm Headphone Jack Adapter": "Lightning",
    "Car Charger with Lightning Cable": "Lightning",
    "USB-C to USB-C Cable": "USB-C",
    "USB-C to 3.5mm Headphone Jack Adapter": "USB-C",
    "Car Charger with USB-C Cable": "USB-C",
}
MAG_PRODUCTS = ("Magnetic Wireless Charger", "Magnetic Wallet Card Holder", "Magnetic Car Mount",
                "3-in-1 Magnetic Charging Stand", "Magnetic Power Bank 5000mAh",
                "Magnetic Phone Grip Ring")  # fmt: skip
ACCESSORY_WEIGHTS = {"case": 0.34, "screen": 0.24, "lens": 0.12, "cable": 0.18, "magsafe": 0.12}


@dataclass(frozen=True)
class Accessory:
    type: str
    title: str
    fits: frozenset[str]  # names of the phones it fits
    hard: tuple[str, ...]  # incompatible phones a shopper could confuse with the fitting ones


def fit_group(kind: str, phone: Phone) -> tuple[str, ...]:
    for group in SHARED_FIT.get(kind, []):
        if phone.name in group:
            return group
    return (phone.name,)


def siblings(fits: frozenset[str]) -> tuple[str, ...]:
    """Same line, same generation (another tier) or a neighbouring generation, not fitting."""
    out = []
    for name in sorted(fits):
        p = BY_NAME[name]
        for q in PHONES:
            if q.name not in fits and q.line == p.line and abs(q.gen - p.gen) <= 1 and q.name not in out:
                out.append(q.name)
    return tuple(out)


def model_list(rng: random.Random, names: tuple[str, ...]) -> str:
    """How a title lists the phones it fits: 'iPhone 13 / 13 Pro / 14', 'Galaxy S23/S23+', ..."""
    if len(names) == 1:
        name = names[0]
        p = BY_NAME[name]
        if p.brand in ("Samsung", "Google") and rng.random() < 0.35:
            name = f"{p.brand} {name}"
        if p.line.startswith("Galaxy") and rng.random() < 0.3 and not name.endswith("5G"):
            name += " 5G"
        return name
    sep = rng.choice((" / ", "/", " and ", ", "))
    first, rest = names[0], list(names[1:])
    prefix = "iPhone " if first.startswith("iPhone") else "Galaxy " if first.startswith("Galaxy") else ""
    if prefix and rng.random() < 0.6:
        rest = [n.removeprefix(prefix) for n in rest]
    return sep.join([first, *rest])


def pick_features(rng: random.Random, pool: tuple[str, ...], k: tuple[int, int]) -> str:
    return ", ".join(rng.sample(pool, rng.randint(*k)))


def make_model_specific(rng: random.Random, kind: str) -> Accessory:
    phone = rng.choice(PHONES)
    group = fit_group(kind, phone)
    models = model_list(rng, group)
    size = f' {BY_NAME[group[0]].screen}"' if rng.random() < 0.4 else ""
    year = f" ({2000 + BY_NAME[group[0]].gen + 8})" if phone.line == "iPhone" and rng.random() < 0.2 else ""
    if kind == "case":
        brand = rng.choice(list(CASE_BRANDS))
        series = rng.choice(CASE_BRANDS[brand])
        feats = pick_features(rng, CASE_FEATURES, (1, 2))
        color = rng.choice(CASE_COLORS)
        style = rng.random()
        if style < 0.45:
            title = f"{brand} {series} Case for {models}{size}{year}, {feats} - {color}"
        elif style < 0.75:
            title = f"{brand} {series} Designed for {models} Case{year}, {feats}, {color}"
        else:
            title = f"{models} Case, {brand} {series}{size} {feats} Phone Cover ({color})"
    elif kind == "screen":
        brand, pack = rng.choice(GLASS_BRANDS), rng.choice(("", "[2 Pack] ", "[3 Pack] ", "3 Pack "))
        feats = pick_features(rng, GLASS_FEATURES, (1, 3))
        if rng.random() < 0.6:
            title = f"{brand} {pack}Screen Protector for {models}{size}, {feats}"
        else:
            title = f"{pack}{brand} Glass Screen Protector Compatible with {models}{year}, {feats}"
    else:
        brand, pack = rng.choice(GLASS_BRANDS), rng.choice(("[2 Pack]", "[3 Pack]", "3+3 Pack", ""))
        feats = pick_features(rng, ("HD Clear", "Anti-Scratch", "Tempered Glass", "Night Shooting", "Easy Install"),
                              (1, 3))  # fmt: skip
        title = f"{brand} Camera Lens Protector for {models}, {feats} Camera Cover {pack}".strip()
    fits = frozenset(group)
    return Accessory(kind, title, fits, siblings(fits))


def make_cable(rng: random.Random) -> Accessory:
    product = rng.choice(list(CABLES))
    port = CABLES[product]
    brand = rng.choice(CABLE_BRANDS)
    spec = rng.choice(("3ft", "6ft", "10ft", "2-Pack 6ft", "1m", "20W", "60W", "Braided 6.6ft"))
    noise = rng.choice(("Fast Charging", "MFi Certified" if port == "Lightning" else "PD Fast Charging",
                        "Nylon Braided", "Durable", "Data Sync"))  # fmt: skip
    fits = frozenset(p.name for p in PHONES if p.port == port)
    apple = [p for p in PHONES if p.line == "iPhone" and p.port == port]
    hint = ""
    if rng.random() < 0.5:
        gens = sorted({p.gen for p in apple}, reverse=True)[: rng.randint(2, 4)]
        hint = " for iPhone " + "/".join(str(g) for g in gens)
        if port == "USB-C" and rng.random() < 0.6:
            hint += rng.choice((", Galaxy S24", ", Samsung Galaxy S23", ", Pixel 8", ", Galaxy S24, Pixel 9"))
    title = f"{brand} {product} {spec}, {noise}{hint}"
    hard = tuple(p.name for p in PHONES if p.line.startswith("iPhone") and p.name not in fits)
    return Accessory("cable", title, fits, hard)


def make_magsafe(rng: random.Random) -> Accessory:
    brand, product = rng.choice(MAG_BRANDS), rng.choice(MAG_PRODUCTS)
    fits = frozenset(p.name for p in PHONES if p.magsafe)
    hint = ""
    if rng.random() < 0.5:
        gens = list(range(16, 11, -1))[: rng.randint(3, 5)]
        hint = " for iPhone " + "/".join(str(g) for g in gens)  # examples: MagSafe fits every iPhone 12-16
    extra = rng.choice(("15W Fast Charging", "Strong Magnets", "Slim", "Adjustable", "Foldable", "Leather"))
    title = f"{brand} {product} Compatible with MagSafe{hint}, {extra}"
    hard = tuple(p.name for p in PHONES if p.line.startswith("iPhone") and p.name not in fits)
    return Accessory("magsafe", title, fits, hard)


def make_accessory(rng: random.Random) -> Accessory:
    kind = rng.choices(list(ACCESSORY_WEIGHTS), weights=list(ACCESSORY_WEIGHTS.values()))[0]
    if kind == "cable":
        return make_cable(rng)
    if kind == "magsafe":
        return make_magsafe(rng)
    return make_model_specific(rng, kind)


def phone_text(rng: random.Random, p: Phone) -> str:
    """A listing or how a shopper names their phone."""
    storage = rng.choice(("64GB", "128GB", "256GB", "512GB") if p.brand == "Apple" else ("128GB", "256GB", "512GB"))
    color = rng.choice(p.colors)
    name = p.name if p.brand != "Samsung" or rng.random() < 0.5 else f"{p.name} 5G".replace("5G 5G", "5G")
    style = rng.random()
    if style < 0.3:
        return name
    if style < 0.55:
        return f"{p.brand} {name}, {storage}, {color} - Unlocked" + rng.choice(("", " (Renewed)"))
    if style < 0.8:
        return f"{p.brand} {name} ({storage}, {color})" + rng.choice(("", ", Factory Unlocked", " - Verizon"))
    return f"{name} {storage} {color}"


def make_rows(rng: random.Random, n: int, seen: set[tuple[str, str]]) -> list[dict]:
    rows: list[dict] = []
    kinds, weights = zip(*KIND_SHARES, strict=True)
    while len(rows) < n:
        acc = make_accessory(rng)
        kind = rng.choices(kinds, weights=weights)[0]
        if kind == "match":
            pool = sorted(acc.fits)
        elif kind == "hard":
            pool = list(acc.hard)
        else:
            brands = {BY_NAME[f].brand for f in acc.fits}
            pool = [p.name for p in PHONES if p.brand not in brands and p.name not in acc.fits]
        if not pool:
            continue
        phone = phone_text(rng, BY_NAME[rng.choice(pool)])
        if (phone, acc.title) in seen:
            continue
        seen.add((phone, acc.title))
        rows.append({"phone": phone, "accessory": acc.title, "type": acc.type, "kind": kind,
                     "label": int(kind == "match")})  # fmt: skip
    return rows


def generate(seed: int = SEED) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    return {split: make_rows(rng, n, seen) for split, n in SPLIT_SIZES.items()}


def main() -> None:
    parser = generator_parser(__doc__, DEFAULT_OUT, SEED)
    args = parser.parse_args()
    splits = generate(args.seed)
    write_splits(splits, args.out)
    report_splits(splits, args.out)


if __name__ == "__main__":
    main()
