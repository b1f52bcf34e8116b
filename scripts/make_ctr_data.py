"""Generate the bundled ad click (CTR) dataset from a known hidden click model.

Synthetic search-ads impressions: a shopper's query over twelve product categories (running shoes,
headphones, coffee makers, laptops, ...) with real brands and product lines, an ad shown for it (an
ad title with marketing copy: "Brooks Ghost 16 Running Shoes - Wide Fit, Free Returns | Shop Now"),
and the user's behaviour: past clicks of this user in the ad's category (30 days), the user's
category affinity (0-1), the ad's position on the page (1 = top) and the device.

Whether the impression was clicked is drawn from a hidden logistic model:

    z = -2.6 + 4.5 * relevance(query, ad)               text: same category, brand, attribute
          + 2.0 * (affinity - 0.35)                      behaviour
          + 0.45 * log(1 + past_clicks)                  behaviour
          - (0.55 if mobile else 0.35) * log(position)   position bias, steeper on phones
          + N(0, 0.3)                                    what nobody observes
    clicked ~ Bernoulli(sigmoid(z))

``relevance`` is 0 for an ad of another category, 0.5 for the same category, more when the ad has
the brand / product line / attribute the query asks for, less when it has another brand. So the
text matters (a model must read query and ad together) and the behaviour features matter (they
are independent of the text). Rows are ``{"query", "ad", "position", "past_clicks", "affinity",
"mobile", "clicked"}``. ``--stats`` prints the hidden model's own AUC and log-loss on the test
split (the ceiling a model can reach). A fixed seed makes reruns byte-identical.

Usage::

    python scripts/make_ctr_data.py [--out DIR] [--seed N] [--stats]
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from deltatune.data import generator_parser, report_splits, write_splits

SEED = 77
SPLIT_SIZES = {"train": 3000, "valid": 500, "test": 500}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "deltatune" / "data" / "ctr"


@dataclass(frozen=True)
class Category:
    nouns: tuple[str, ...]  # how queries and ads name the product
    brands: dict[str, tuple[str, ...]]  # brand -> product lines
    attrs: tuple[str, ...]  # attributes queries ask for and ads claim
    benefits: tuple[str, ...]


CATEGORIES = {
    "running shoes": Category(
        ("running shoes", "running sneakers"),
        {"Nike": ("Pegasus 41", "Vomero 17"), "Brooks": ("Ghost 16", "Glycerin 21"), "Hoka": ("Clifton 9", "Bondi 8"),
         "ASICS": ("Gel-Nimbus 26", "Novablast 4")},
        ("wide fit", "women's", "men's", "trail", "waterproof"),
        ("Lightweight Cushioning", "Breathable Mesh", "Free Returns"),
    ),
    "headphones": Category(
        ("headphones", "wireless headphones"),
        {"Sony": ("WH-1000XM5", "WH-CH720N"), "Bose": ("QuietComfort Ultra", "QuietComfort 45"),
         "Apple": ("AirPods Max",), "JBL": ("Tune 770NC", "Live 660NC")},
        ("noise cancelling", "over-ear", "bluetooth", "with mic"),
        ("30-Hour Battery", "Studio Sound", "Free 2-Day Shipping"),
    ),
    "coffee makers": Category(
        ("coffee maker", "coffee machine"),
        {"Keurig": ("K-Elite", "K-Mini"), "Ninja": ("CE251", "Specialty CM401"),
         "Breville": ("Barista Express", "Bambino Plus"), "De'Longhi": ("Dinamica", "Stilosa")},
        ("12 cup", "single serve", "espresso", "programmable"),
        ("Brew in Minutes", "Barista-Quality Coffee", "Save 20% Today"),
    ),
    "laptops": Category(
        ("laptop", "notebook"),
        {"Apple": ("MacBook Air M3", "MacBook Pro 14"), "Dell": ("XPS 13", "Inspiron 15"),
         "Lenovo": ("ThinkPad X1 Carbon", "IdeaPad Slim 5"), "HP": ("Spectre x360", "Pavilion 15")},
        ("16gb ram", "2-in-1", "lightweight", "gaming"),
        ("All-Day Battery", "Student Discount", "Free Shipping"),
    ),
    "backpacks": Category(
        ("backpack", "daypack"),
        {"The North Face": ("Borealis", "Recon"), "Osprey": ("Daylite Plus", "Talon 22"),
         "Herschel": ("Little America",), "JanSport": ("SuperBreak", "Right Pack")},
        ("laptop", "waterproof", "hiking", "school"),
        ("Lifetime Warranty", "Padded Straps", "New Colors"),
    ),
    "moisturizer": Category(
        ("moisturizer", "face moisturizer", "face cream"),
        {"CeraVe": ("Daily Moisturizing Lotion", "Moisturizing Cream"), "Neutrogena": ("Hydro Boost",),
         "La Roche-Posay": ("Toleriane Double Repair",), "Cetaphil": ("Rich Hydrating Cream",)},
        ("for dry skin", "fragrance free", "spf 30", "oil free"),
        ("Dermatologist Recommended", "48H Hydration", "Subscribe & Save"),
    ),
    "smartwatches": Category(
        ("smartwatch", "smart watch", "fitness watch"),
        {"Apple": ("Watch Series 9", "Watch SE"), "Samsung": ("Galaxy Watch6", "Galaxy Watch FE"),
         "Garmin": ("Forerunner 265", "Venu 3"), "Fitbit": ("Versa 4", "Sense 2")},
        ("gps", "waterproof", "heart rate", "sleep tracking"),
        ("Track Every Workout", "Trade-In Offer", "Free Engraving"),
    ),
    "blenders": Category(
        ("blender", "smoothie blender"),
        {"Vitamix": ("E310 Explorian", "5200"), "Ninja": ("Professional BL610", "Nutri Ninja"),
         "NutriBullet": ("Pro 900",), "KitchenAid": ("K150",)},
        ("personal", "high speed", "1000w", "quiet"),
        ("Crushes Ice", "7-Year Warranty", "Holiday Deal"),
    ),
    "tents": Category(
        ("tent", "camping tent"),
        {"Coleman": ("Sundome", "Skydome"), "REI": ("Half Dome SL", "Trail Hut"),
         "Big Agnes": ("Copper Spur HV UL2",), "Kelty": ("Late Start", "Wireless 4")},
        ("2 person", "4 person", "backpacking", "waterproof"),
        ("Sets Up in Minutes", "Weatherproof", "Members Save 10%"),
    ),
    "gaming mice": Category(
        ("gaming mouse", "mouse"),
        {"Logitech": ("G502 HERO", "G305 Lightspeed"), "Razer": ("DeathAdder V3", "Basilisk V3"),
         "SteelSeries": ("Rival 3", "Aerox 5"), "Corsair": ("Harpoon RGB",)},
        ("wireless", "rgb", "lightweight", "ergonomic"),
        ("25K DPI Sensor", "Esports Grade", "Free Shipping"),
    ),
    "yoga mats": Category(
        ("yoga mat", "exercise mat"),
        {"Manduka": ("PRO", "eKO Lite"), "Lululemon": ("The Mat 5mm",), "Gaiam": ("Premium Print",),
         "Liforme": ("Travel Mat",)},
        ("non slip", "extra thick", "6mm", "travel"),
        ("Superior Grip", "Eco-Friendly", "Shop the Sale"),
    ),
    "vacuum cleaners": Category(
        ("vacuum", "vacuum cleaner"),
        {"Dyson": ("V15 Detect", "V8"), "Shark": ("Navigator NV352", "Stratos"), "iRobot": ("Roomba j7+",),
         "Bissell": ("CleanView",)},
        ("cordless", "robot", "for pet hair", "bagless"),
        ("Powerful Suction", "Free Accessories", "Limited-Time Offer"),
    ),
}  # fmt: skip
SHOUTED = {"gps": "GPS", "rgb": "RGB", "spf 30": "SPF 30", "16gb ram": "16GB RAM", "1000w": "1000W"}
CTAS = ("Shop Now", "Buy Today", "Official Site", "Order Online", "Learn More", "See Deals")


@dataclass(frozen=True)
class Intent:
    category: str
    brand: str | None
    line: str | None
    attr: str | None


def make_query(rng: random.Random) -> tuple[Intent, str]:
    cat_name = rng.choice(list(CATEGORIES))
    cat = CATEGORIES[cat_name]
    noun = rng.choice(cat.nouns)
    brand = rng.choice(list(cat.brands)) if rng.random() < 0.55 else None
    line = rng.choice(cat.brands[brand]) if brand and rng.random() < 0.35 else None
    attr = rng.choice(cat.attrs) if rng.random() < 0.45 else None
    words = [rng.choice(("best ", "cheap ", "")) if not brand and rng.random() < 0.3 else ""]
    if attr and not attr.startswith("for ") and rng.random() < 0.7:
        words.append(attr + " ")
        attr_after = False
    else:
        attr_after = attr is not None
    if brand:
        words.append(brand.lower() + " ")
    if line:
        words.append(line.lower() + " " + (noun if rng.random() < 0.4 else ""))
    else:
        words.append(noun)
    if attr_after:
        words.append(" " + attr)
    return Intent(cat_name, brand, line, attr), " ".join("".join(words).split())


def make_ad(rng: random.Random, intent: Intent) -> tuple[str, float]:
    """An ad for the query's page and the hidden relevance of the pair (0-1)."""
    roll = rng.random()
    others = [c for c in CATEGORIES if c != intent.category]
    cat_name = rng.choice(others) if roll < 0.35 else intent.category  # 35%: an ad of another category
    cat = CATEGORIES[cat_name]
    if cat_name == intent.category and intent.brand and roll < 0.7:
        brand = intent.brand
    else:
        brand = rng.choice(list(cat.brands))
    same_line = brand == intent.brand and intent.line and rng.random() < 0.6
    line = intent.line if same_line and intent.line else rng.choice(cat.brands[brand])
    claims = rng.sample(cat.attrs, rng.randint(0, 2))
    if cat_name == intent.category and intent.attr and rng.random() < 0.4 and intent.attr not in claims:
        claims.append(intent.attr)
    noun = rng.choice(cat.nouns).title()
    claim = ", ".join(SHOUTED.get(c, c if c[0].isdigit() else c.title()) for c in claims)
    head = f"{brand} {line} {noun}" + (f" - {claim}" if claim else "")
    ad = f"{head}. {rng.choice(cat.benefits)} | {rng.choice(CTAS)}" if rng.random() < 0.7 else head
    if cat_name != intent.category:
        return ad, 0.0
    rel = 0.5
    if intent.brand:
        rel += 0.3 if brand == intent.brand else -0.25
    if intent.line and brand == intent.brand:
        rel += 0.15 if line == intent.line else -0.05
    if intent.attr:
        rel += 0.2 if intent.attr in claims else -0.1
    return ad, min(1.0, max(0.0, rel))


def click_logit(rel: float, affinity: float, past_clicks: int, position: int, mobile: int) -> float:
    bias = 0.55 if mobile else 0.35
    return -2.6 + 4.5 * rel + 2.0 * (affinity - 0.35) + 0.45 * math.log1p(past_clicks) - bias * math.log(position)


def poisson(rng: random.Random, lam: float) -> int:
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def make_rows(rng: random.Random, n: int) -> list[tuple[dict, float]]:
    """Rows and the hidden model's click probability (without the unobserved noise) for each."""
    rows = []
    for _ in range(n):
        intent, query = make_query(rng)
        ad, rel = make_ad(rng, intent)
        affinity = round(rng.betavariate(1.4, 2.2), 2)
        past_clicks = poisson(rng, 6 * affinity + 0.3)
        position = rng.choices(range(1, 9), weights=(8, 7, 6, 5, 4, 3, 2, 2))[0]
        mobile = int(rng.random() < 0.6)
        z = click_logit(rel, affinity, past_clicks, position, mobile)
        clicked = int(rng.random() < 1 / (1 + math.exp(-(z + rng.gauss(0, 0.3)))))
        row = {"query": query, "ad": ad, "position": position, "past_clicks": past_clicks, "affinity": affinity,
               "mobile": mobile, "clicked": clicked}  # fmt: skip
        rows.append((row, 1 / (1 + math.exp(-z))))
    return rows


def generate(seed: int = SEED) -> dict[str, list[tuple[dict, float]]]:
    rng = random.Random(seed)
    return {split: make_rows(rng, n) for split, n in SPLIT_SIZES.items()}


def auc(scores: list[float], labels: list[int]) -> float:
    """Pairwise AUC (ties count half); for --stats only."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def main() -> None:
    parser = generator_parser(__doc__, DEFAULT_OUT, SEED)
    parser.add_argument("--stats", action="store_true", help="print the hidden model's test AUC and log-loss")
    args = parser.parse_args()
    splits = generate(args.seed)
    if args.stats:
        pairs = splits["test"]
        labels = [r["clicked"] for r, _ in pairs]
        probs = [p for _, p in pairs]
        loss = -sum(math.log(p if y else 1 - p) for p, y in zip(probs, labels, strict=True)) / len(labels)
        print(f"test: click rate {sum(labels) / len(labels):.3f}, hidden model AUC {auc(probs, labels):.4f}, "
              f"log-loss {loss:.4f}")  # fmt: skip
        return
    rows = {split: [row for row, _ in pairs] for split, pairs in splits.items()}
    write_splits(rows, args.out)
    report_splits(rows, args.out)


if __name__ == "__main__":
    main()
