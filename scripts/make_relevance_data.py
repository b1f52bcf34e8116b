"""Generate the bundled query-product relevance dataset.

The dataset is synthetic but built from realistic e-commerce vocabulary: twenty
product categories, each with brands, product lines (model names and numbers)
and attributes such as colour, size, capacity or material.  A *product* is a
random assignment of those attributes, rendered into a marketplace-style title.
A *query* mentions a few attributes of a product, rendered the way shoppers
type (lower case, "mens", "32oz", "for kids", "cheap ...", rare typos).

Labels follow one rule: a title is relevant (label 1) when it belongs to the
query's category and agrees with every attribute the query mentions.  Each
query yields one positive and one negative row.  Half of the negatives are
hard: same category, with exactly one mentioned attribute changed (an iPhone 13
case for "iphone 15 case", a wired pair for "wireless headphones", a size 10 for
"size 10.5").  The other half come from other categories, often related ones
(a phone for "iphone 15 case") chosen to share words with the query.

Every row is ``{"query", "title", "category", "label"}``, where ``category`` is
the category of the product in the title.  Queries are unique and each query's
rows live in a single split, so no (query, title) pair appears in two splits.
A fixed seed makes reruns byte-identical.

Usage::

    python scripts/make_relevance_data.py [--out DIR]
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltatune.data import generator_parser, report_splits, write_splits

SEED = 1234
SPLIT_SIZES = {"train": 3000, "valid": 500, "test": 500}
HARD_NEGATIVE_SHARE = 0.5
RELATED_NEGATIVE_SHARE = 0.5
TYPO_RATE = 0.04
FILLER_RATE = 0.15
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "deltatune" / "data" / "relevance"

FRONT_FILLERS = ("cheap", "best", "new", "affordable", "top rated", "discount")
BACK_FILLERS = ("on sale", "2024", "deal", "free shipping")


# --------------------------------------------------------------------------
# Vocabulary model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """One attribute value: how titles write it and how shoppers type it."""

    title: str
    query: tuple[str, ...]


def v(title: str, *query: str) -> Value:
    """Build a :class:`Value`; query forms default to the lower-cased title."""
    if not query and title:
        query = (title.lower(),)
    return Value(title, query)


@dataclass(frozen=True)
class Slot:
    """An attribute of a category.

    ``position`` says where the value goes in a query: ``"front"`` (before the
    brand), ``"mid"`` (after brand/line, before the noun), ``"back"`` (after
    the noun) or ``"noun"`` (the form is a whole noun phrase that replaces the
    category noun).  Query forms
    starting with "for " or "with " always go after the noun.
    """

    name: str
    values: tuple[Value, ...]
    position: str = "mid"


@dataclass(frozen=True)
class Line:
    """A product line of a brand; ``only`` restricts slots to some values."""

    brand: str
    name: str = ""
    only: dict[str, tuple[str, ...]] = field(default_factory=dict)
    query: tuple[str, ...] = ()

    def query_forms(self) -> tuple[str, ...]:
        if self.query:
            return self.query
        name = self.name.lower()
        with_brand = f"{self.brand.lower()} {name}"
        if len(name) < 4 or name[0].isdigit():
            return (with_brand,)
        return (name, with_brand)


@dataclass(frozen=True)
class Category:
    """A product category: lines, attribute slots and title templates."""

    name: str
    nouns: tuple[str, ...]
    lines: tuple[Line, ...]
    slots: tuple[Slot, ...]
    titles: tuple[str, ...]
    noun_optional: bool = False
    related: tuple[str, ...] = ()

    def slot(self, name: str) -> Slot:
        return next(s for s in self.slots if s.name == name)


Product = dict[str, object]  # "line" -> Line, slot name -> Value
Row = dict[str, Any]  # one dataset line: query, title, category, label

COLORS = (v("Black"), v("White"), v("Blue"), v("Red"), v("Pink"), v("Green"), v("Gray", "gray", "grey"))
GENDER = (v("Men's", "mens", "men's", "for men"), v("Women's", "womens", "women's", "for women"))
KIDS = v("Kids'", "kids", "for kids", "youth")


def brand_forms(brand: str) -> tuple[str, ...]:
    low = brand.lower()
    plain = re.sub(r"['\-.]", "", low)
    return (low,) if plain == low else (low, plain)


OVER, ON, IN = "Over-Ear Headphones", "On-Ear Headphones", "In-Ear Earbuds"


def headphones(brand: str, name: str, form: str, wireless: bool, anc: bool, query: tuple[str, ...] = ()) -> Line:
    """A headphone model: its form factor, connection and noise cancelling are fixed."""
    only: dict[str, tuple[str, ...]] = {
        "form": (form,),
        "connection": ("Wireless Bluetooth" if wireless else "Wired",),
        "anc": ("Noise Cancelling" if anc else "",),
    }
    return Line(brand, name, only, query)


# --------------------------------------------------------------------------
# Categories
# --------------------------------------------------------------------------

PHONE_MODELS = (
    v("iPhone 13", "iphone 13"),
    v("iPhone 14", "iphone 14"),
    v("iPhone 15", "iphone 15"),
    v("iPhone 15 Pro", "iphone 15 pro"),
    v("iPhone 15 Pro Max", "iphone 15 pro max"),
    v("Galaxy S23", "galaxy s23", "samsung s23"),
    v("Galaxy S24", "galaxy s24", "samsung s24", "s24"),
    v("Galaxy S24 Ultra", "galaxy s24 ultra", "s24 ultra"),
    v("Galaxy A54", "galaxy a54", "samsung a54"),
    v("Pixel 7a", "pixel 7a"),
    v("Pixel 8", "pixel 8", "google pixel 8"),
    v("Pixel 8 Pro", "pixel 8 pro"),
)

CATEGORIES: tuple[Category, ...] = (
    Category(
        name="smartphones",
        nouns=("phone", "smartphone", "cell phone"),
        lines=tuple(Line("Apple", m.title) for m in PHONE_MODELS[:5])
        + tuple(Line("Samsung", m.title, query=m.query) for m in PHONE_MODELS[5:9])
        + tuple(Line("Google", m.title) for m in PHONE_MODELS[9:])
        + (Line("OnePlus", "12"), Line("OnePlus", "11"), Line("Motorola", "Moto G Power", query=("moto g power",))),
        slots=(
            Slot(
                "storage",
                (
                    v("64GB", "64gb"),
                    v("128GB", "128gb", "128 gb"),
                    v("256GB", "256gb", "256 gb"),
                    v("512GB", "512gb"),
                    v("1TB", "1tb"),
                ),
            ),
            Slot(
                "color",
                (
                    v("Midnight Black", "black"),
                    v("Starlight White", "white"),
                    v("Blue"),
                    v("Green"),
                    v("Pink"),
                    v("Titanium", "titanium"),
                ),
                "front",
            ),
            Slot("condition", (v("Unlocked", "unlocked"), v("Renewed", "refurbished", "renewed"))),
        ),
        titles=(
            "{brand} {line} {storage} {color} - {condition} 5G Smartphone",
            "{brand} {line}, {storage}, {color} ({condition})",
        ),
        noun_optional=True,
        related=("phone cases", "phone chargers"),
    ),
    Category(
        name="phone cases",
        nouns=("case", "phone case", "cover"),
        lines=(
            Line("OtterBox", "Defender Series"),
            Line("OtterBox", "Symmetry Series"),
            Line("Spigen", "Tough Armor"),
            Line("Spigen", "Ultra Hybrid"),
            Line("Casetify", "Impact"),
            Line("ESR", "Classic Hybrid"),
            Line("Speck", "Presidio2 Grip"),
        ),
        slots=(
            Slot("device", PHONE_MODELS),
            Slot(
                "material",
                (
                    v("Clear"),
                    v("Silicone"),
                    v("Leather"),
                    v("Rugged", "rugged", "heavy duty"),
                    v("Wallet"),
                    v("Glitter", "glitter", "sparkly"),
                ),
            ),
            Slot(
                "feature",
                (
                    v(""),
                    v("with MagSafe", "magsafe", "with magsafe"),
                    v("with Kickstand", "with kickstand", "kickstand"),
                ),
            ),
            Slot("color", COLORS, "front"),
        ),
        titles=(
            "{brand} {line} {material} Case for {device} {feature}, {color}",
            "{brand} {device} Case, {line} {material} Phone Cover {feature} - {color}",
        ),
        related=("smartphones",),
    ),
    Category(
        name="phone chargers",
        nouns=("charger", "phone charger"),
        lines=(
            Line("Anker", "Nano"),
            Line("Anker", "PowerCore", only={"type": ("Portable Power Bank",)}),
            Line("Apple"),
            Line("Samsung"),
            Line("Belkin", "BoostCharge"),
            Line("UGREEN", "Nexode"),
        ),
        slots=(
            Slot(
                "type",
                (
                    v("USB-C Wall Charger", "wall charger", "usb c charger block", "usb c wall charger"),
                    v("Wireless Charging Pad", "wireless charger", "wireless charging pad"),
                    v("USB-C Car Charger", "car charger", "usb c car charger"),
                    v("Portable Power Bank", "power bank", "portable charger", "battery pack"),
                ),
                "noun",
            ),
            Slot(
                "wattage",
                (
                    v("20W", "20w", "20 watt"),
                    v("30W", "30w", "30 watt"),
                    v("45W", "45w"),
                    v("65W", "65w", "65 watt"),
                    v("100W", "100w"),
                ),
            ),
            Slot("color", (v("White"), v("Black")), "front"),
        ),
        titles=("{brand} {line} {wattage} {type}, {color}", "{brand} {type} {wattage} {line} Fast Charging - {color}"),
        related=("smartphones", "phone cases"),
    ),
    Category(
        name="laptops",
        nouns=("laptop", "notebook", "laptop computer"),
        lines=(
            Line("Dell", "XPS 13"),
            Line("Dell", "XPS 15"),
            Line("Dell", "Inspiron 15"),
            Line("HP", "Pavilion 15"),
            Line("HP", "Envy x360"),
            Line("HP", "Spectre x360"),
            Line("Lenovo", "ThinkPad X1 Carbon"),
            Line("Lenovo", "IdeaPad 5"),
            Line("Lenovo", "Legion 5"),
            Line("ASUS", "ZenBook 14"),
            Line("ASUS", "ROG Strix G16"),
            Line("Acer", "Aspire 5"),
            Line("Acer", "Nitro 5"),
            Line("Microsoft", "Surface Laptop 5"),
        ),
        slots=(
            Slot(
                "cpu",
                (
                    v("Intel Core i5", "i5", "core i5"),
                    v("Intel Core i7", "i7", "core i7"),
                    v("AMD Ryzen 5", "ryzen 5"),
                    v("AMD Ryzen 7", "ryzen 7"),
                ),
            ),
            Slot(
                "ram", (v("8GB RAM", "8gb ram"), v("16GB RAM", "16gb ram", "16gb"), v("32GB RAM", "32gb ram", "32gb"))
            ),
            Slot(
                "storage",
                (v("256GB SSD", "256gb ssd"), v("512GB SSD", "512gb ssd", "512gb"), v("1TB SSD", "1tb ssd", "1tb")),
            ),
            Slot("touch", (v(""), v("Touchscreen", "touchscreen", "touch screen")), "front"),
        ),
        titles=(
            "{brand} {line} {touch} Laptop, {cpu}, {ram}, {storage}, Windows 11",
            "{brand} {line} Laptop - {cpu} / {ram} / {storage} {touch}",
        ),
        noun_optional=True,
        related=("laptop bags", "keyboards"),
    ),
    Category(
        name="laptop bags",
        nouns=("laptop bag", "laptop case"),
        lines=(Line("Targus"), Line("Amazon Basics"), Line("Incase"), Line("Tomtoc"), Line("Samsonite")),
        slots=(
            Slot(
                "size",
                (
                    v("13-Inch", "13 inch", "13in"),
                    v("14-Inch", "14 inch", "14in"),
                    v("15.6-Inch", "15.6 inch", "15 inch"),
                    v("17.3-Inch", "17 inch", "17.3 inch"),
                ),
            ),
            Slot(
                "type",
                (
                    v("Laptop Sleeve", "laptop sleeve", "sleeve"),
                    v("Laptop Messenger Bag", "messenger bag", "laptop messenger bag"),
                    v("Laptop Briefcase", "laptop briefcase", "briefcase"),
                ),
                "noun",
            ),
            Slot("material", (v("Neoprene"), v("Nylon"), v("Leather"), v("Canvas"))),
            Slot("color", (v("Black"), v("Gray", "gray", "grey"), v("Navy"), v("Brown")), "front"),
        ),
        titles=("{brand} {size} {type}, {material}, {color}", "{brand} {material} {type} for {size} Laptops - {color}"),
        related=("laptops", "backpacks"),
    ),
    Category(
        name="headphones",
        nouns=("headphones", "headset"),
        lines=(
            headphones("Sony", "WH-1000XM5", OVER, True, True, ("wh-1000xm5", "sony xm5")),
            headphones("Sony", "WF-1000XM5", IN, True, True, ("wf-1000xm5",)),
            headphones("Sony", "MDR-7506", OVER, False, False, ("mdr-7506", "sony mdr7506")),
            headphones("Bose", "QuietComfort Ultra", OVER, True, True),
            headphones("Bose", "QuietComfort Earbuds II", IN, True, True),
            headphones("Apple", "AirPods Pro 2", IN, True, True),
            headphones("Apple", "EarPods", IN, False, False),
            headphones("Sennheiser", "Momentum 4", OVER, True, True),
            headphones("Sennheiser", "HD 280 Pro", OVER, False, False),
            headphones("JBL", "Tune 510BT", ON, True, False),
            headphones("JBL", "Tune 110", IN, False, False),
            headphones("Beats", "Solo 4", ON, True, False),
            headphones("Beats", "Studio Pro", OVER, True, True),
            headphones("Audio-Technica", "ATH-M50x", OVER, False, False, ("ath-m50x", "audio technica m50x")),
            headphones("Anker", "Soundcore Life Q30", OVER, True, True),
        ),
        slots=(
            Slot(
                "form",
                (
                    v("Over-Ear Headphones", "over ear headphones", "over-ear headphones"),
                    v("On-Ear Headphones", "on ear headphones"),
                    v("In-Ear Earbuds", "earbuds", "in ear headphones", "earphones"),
                ),
                "noun",
            ),
            Slot("connection", (v("Wireless Bluetooth", "wireless", "bluetooth"), v("Wired", "wired")), "front"),
            Slot("anc", (v(""), v("Noise Cancelling", "noise cancelling", "noise canceling", "anc")), "front"),
            Slot("color", (v("Black"), v("White"), v("Silver"), v("Midnight Blue", "blue"), v("Pink")), "front"),
        ),
        titles=(
            "{brand} {line} {connection} {anc} {form}, {color}",
            "{brand} {line} {anc} {form} with Mic - {connection} - {color}",
        ),
        related=("smartphones",),
    ),
    Category(
        name="smartwatches",
        nouns=("smartwatch", "smart watch", "fitness watch"),
        lines=(
            Line(
                "Apple", "Apple Watch Series 9", {"size": ("41mm", "45mm")}, ("apple watch series 9", "apple watch 9")
            ),
            Line("Apple", "Apple Watch SE", {"size": ("40mm", "44mm")}, ("apple watch se",)),
            Line("Apple", "Apple Watch Ultra 2", {"size": ("49mm",)}, ("apple watch ultra 2", "apple watch ultra")),
            Line("Samsung", "Galaxy Watch 6", {"size": ("40mm", "44mm")}, ("galaxy watch 6", "samsung watch 6")),
            Line("Samsung", "Galaxy Watch 6 Classic", {"size": ("43mm", "47mm")}, ("galaxy watch 6 classic",)),
            Line("Garmin", "Forerunner 265", {"size": ("42mm", "46mm")}),
            Line("Garmin", "Venu 3", {"size": ("41mm", "45mm")}),
            Line("Google", "Pixel Watch 2", {"size": ("41mm",)}),
            Line("Fitbit", "Versa 4", {"size": ("40mm",)}),
        ),
        slots=(
            Slot("size", tuple(v(f"{n}mm") for n in (40, 41, 42, 43, 44, 45, 46, 47, 49))),
            Slot("connectivity", (v("GPS", "gps"), v("GPS + Cellular", "cellular", "lte", "gps cellular"))),
            Slot(
                "color",
                (
                    v("Midnight", "black", "midnight"),
                    v("Silver"),
                    v("Starlight", "starlight"),
                    v("Pink"),
                    v("Graphite", "graphite"),
                ),
                "front",
            ),
        ),
        titles=(
            "{brand} {line} [{connectivity} {size}] Smartwatch with {color} Case",
            "{brand} {line} ({connectivity}, {size}) - {color}",
        ),
        noun_optional=True,
        related=("watch bands",),
    ),
    Category(
        name="watch bands",
        nouns=("watch band", "band", "strap"),
        lines=(Line("Tasikar"), Line("Fullmosa"), Line("Nomad"), Line("Spigen"), Line("Barton")),
        slots=(
            Slot(
                "device",
                (
                    v("Apple Watch 41mm/40mm/38mm", "apple watch 41mm", "apple watch 40mm"),
                    v("Apple Watch 45mm/44mm/42mm", "apple watch 45mm", "apple watch 44mm"),
                    v("Galaxy Watch 6", "galaxy watch 6", "samsung watch 6"),
                    v("Fitbit Versa 4", "fitbit versa 4", "versa 4"),
                    v("Garmin Forerunner 265", "forerunner 265", "garmin 265"),
                ),
            ),
            Slot(
                "material",
                (
                    v("Silicone"),
                    v("Leather"),
                    v("Nylon Sport Loop", "nylon", "sport loop"),
                    v("Stainless Steel Link", "metal", "stainless steel"),
                    v("Milanese Loop", "milanese"),
                ),
            ),
            Slot("color", (v("Black"), v("Navy"), v("Pink"), v("Brown"), v("Silver")), "front"),
        ),
        titles=(
            "{brand} {material} Band Compatible with {device}, {color}",
            "{brand} {color} {material} Strap for {device}",
        ),
        related=("smartwatches",),
    ),
    Category(
        name="televisions",
        nouns=("tv", "television", "smart tv", "4k tv"),
        lines=(
            Line("Samsung", "Crystal UHD", {"panel": ("LED",)}),
            Line("Samsung", "QN90C", {"panel": ("Neo QLED",)}),
            Line("LG", "C3", {"panel": ("OLED",)}, ("lg c3",)),
            Line("LG", "UQ75", {"panel": ("LED",)}),
            Line("Sony", "Bravia X80K", {"panel": ("LED",)}),
            Line("Sony", "Bravia A80L", {"panel": ("OLED",)}),
            Line("TCL", "4-Series", {"panel": ("LED",)}, ("tcl 4 series",)),
            Line("TCL", "Q6", {"panel": ("QLED",)}, ("tcl q6",)),
            Line("Hisense", "U8", {"panel": ("Mini-LED",)}, ("hisense u8",)),
            Line("Vizio", "M-Series", {"panel": ("QLED",)}, ("vizio m series",)),
        ),
        slots=(
            Slot("size", tuple(v(f'{n}"', f"{n} inch", f'{n}"', f"{n}in") for n in (43, 50, 55, 65, 75, 85))),
            Slot("panel", (v("LED"), v("QLED"), v("Neo QLED", "neo qled"), v("OLED"), v("Mini-LED", "mini led"))),
            Slot("refresh", (v("60Hz", "60hz"), v("120Hz", "120hz", "120 hz"))),
        ),
        titles=(
            "{brand} {size} Class {line} {panel} 4K Smart TV ({refresh})",
            "{brand} {line} {size} {panel} 4K UHD Smart Google TV, {refresh}",
        ),
        related=(),
    ),
    Category(
        name="running shoes",
        nouns=("running shoes", "running shoe", "sneakers", "runners"),
        lines=(
            Line("Nike", "Pegasus 40"),
            Line("Nike", "Vomero 17"),
            Line("Adidas", "Ultraboost Light"),
            Line("Brooks", "Ghost 15"),
            Line("Brooks", "Adrenaline GTS 23"),
            Line("ASICS", "Gel-Kayano 30", query=("gel kayano 30", "kayano 30")),
            Line("ASICS", "Gel-Nimbus 25", query=("gel nimbus 25", "nimbus 25")),
            Line("Hoka", "Clifton 9"),
            Line("Hoka", "Bondi 8"),
            Line("New Balance", "Fresh Foam 1080v13", query=("1080v13", "new balance 1080")),
            Line("Saucony", "Ride 17"),
        ),
        slots=(
            Slot("gender", GENDER + (KIDS,), "front"),
            Slot(
                "size",
                tuple(
                    v(f"Size {s}", f"size {s}") for s in ("6", "7", "8", "8.5", "9", "9.5", "10", "10.5", "11", "12")
                ),
                "back",
            ),
            Slot("width", (v(""), v("Wide", "wide"))),
            Slot(
                "color", (v("Black/White", "black"), v("Blue"), v("Grey", "grey", "gray"), v("Red"), v("Pink")), "front"
            ),
        ),
        titles=(
            "{brand} {gender} {line} Running Shoe, {color}, {size} {width}",
            "{brand} {line} {gender} Road Running Shoes - {color} - {size} {width}",
        ),
        noun_optional=True,
        related=("t-shirts",),
    ),
    Category(
        name="t-shirts",
        nouns=("t-shirt", "t shirt", "tee", "tshirt"),
        lines=(
            Line("Hanes", "ComfortSoft"),
            Line("Hanes", "Beefy-T"),
            Line("Gildan", "Heavy Cotton"),
            Line("Nike", "Dri-FIT", query=("dri fit", "nike dri fit")),
            Line("Champion", "Classic Jersey"),
            Line("Under Armour", "Tech 2.0"),
            Line("Carhartt", "Loose Fit Heavyweight"),
        ),
        slots=(
            Slot("gender", GENDER + (v("Boys'", "boys", "for boys"), v("Girls'", "girls", "for girls")), "front"),
            Slot("sleeve", (v("Short Sleeve", "short sleeve"), v("Long Sleeve", "long sleeve"))),
            Slot("neck", (v("Crewneck", "crew neck", "crewneck"), v("V-Neck", "v neck", "v-neck"))),
            Slot(
                "size",
                (
                    v("Small", "small"),
                    v("Medium", "medium"),
                    v("Large", "large"),
                    v("X-Large", "xl"),
                    v("XX-Large", "xxl", "2xl"),
                ),
                "back",
            ),
            Slot("pack", (v(""), v("3-Pack", "3 pack", "pack of 3"), v("6-Pack", "6 pack"))),
            Slot(
                "color",
                (v("Black"), v("White"), v("Navy"), v("Heather Gray", "gray", "heather gray"), v("Red")),
                "front",
            ),
        ),
        titles=(
            "{brand} {gender} {line} {sleeve} {neck} T-Shirt {pack}, {color}, {size}",
            "{brand} {line} {gender} {neck} Tee, {sleeve}, {color}, {size} {pack}",
        ),
        related=("jeans", "running shoes"),
    ),
    Category(
        name="jeans",
        nouns=("jeans", "denim jeans"),
        lines=(
            Line("Levi's", "501 Original", {"fit": ("Straight",)}, ("501", "levis 501")),
            Line("Levi's", "505 Regular", {"fit": ("Regular",)}, ("505", "levis 505")),
            Line("Levi's", "511 Slim", {"fit": ("Slim",)}, ("511", "levis 511")),
            Line("Levi's", "721 High Rise", {"fit": ("Skinny",), "gender": ("Women's",)}, ("721", "levis 721")),
            Line("Wrangler", "Cowboy Cut", {"fit": ("Slim", "Regular")}),
            Line("Wrangler", "Authentics", {"fit": ("Relaxed", "Straight")}),
            Line("Lee", "Legendary", {"fit": ("Regular", "Bootcut")}),
            Line("Gap", "Everyday"),
            Line("Silver Jeans", "Avery", {"gender": ("Women's",)}),
        ),
        slots=(
            Slot("gender", GENDER, "front"),
            Slot(
                "fit",
                (
                    v("Slim", "slim fit", "slim"),
                    v("Straight", "straight leg", "straight fit"),
                    v("Skinny", "skinny"),
                    v("Relaxed", "relaxed fit"),
                    v("Bootcut", "bootcut", "boot cut"),
                    v("Regular", "regular fit"),
                ),
            ),
            Slot(
                "size",
                tuple(
                    v(f"{w}W x {length}L", f"{w}x{length}", f"{w} x {length}")
                    for w, length in ((30, 30), (32, 30), (32, 32), (34, 30), (34, 32), (36, 32))
                ),
                "back",
            ),
            Slot(
                "wash",
                (
                    v("Dark Wash", "dark wash"),
                    v("Medium Wash", "medium wash"),
                    v("Light Wash", "light wash"),
                    v("Black", "black"),
                ),
            ),
        ),
        titles=(
            "{brand} {gender} {line} {fit} Fit Jeans, {wash}, {size}",
            "{brand} {line} Jeans for {gender_plain} - {fit} Fit, {wash}, {size}",
        ),
        related=("t-shirts",),
    ),
    Category(
        name="backpacks",
        nouns=("backpack", "bookbag", "rucksack"),
        lines=(
            Line("JanSport", "SuperBreak"),
            Line("JanSport", "Big Student"),
            Line("The North Face", "Borealis", query=("borealis", "north face borealis")),
            Line("The North Face", "Jester", query=("jester", "north face jester")),
            Line("Osprey", "Daylite"),
            Line("Herschel", "Little America"),
            Line("Matein"),
        ),
        slots=(
            Slot(
                "type",
                (
                    v("School Backpack", "school backpack", "backpack for school"),
                    v("Hiking Daypack", "hiking backpack", "daypack"),
                    v("Travel Backpack", "travel backpack"),
                    v("Laptop Backpack", "laptop backpack"),
                ),
                "noun",
            ),
            Slot("age", (v(""), v("Kids", "kids", "for kids")), "front"),
            Slot(
                "capacity", (v("20L", "20l", "20 liter"), v("26L", "26l"), v("30L", "30l", "30 liter"), v("40L", "40l"))
            ),
            Slot(
                "color",
                (v("Black"), v("Navy"), v("Red"), v("Gray", "gray", "grey"), v("Pink"), v("Forest Green", "green")),
                "front",
            ),
        ),
        titles=("{brand} {line} {age} {type}, {capacity}, {color}", "{brand} {line} {capacity} {type} {age} - {color}"),
        related=("laptop bags",),
    ),
    Category(
        name="water bottles",
        nouns=("water bottle", "bottle"),
        lines=(
            Line("Hydro Flask", "Wide Mouth", {"material": ("Insulated Stainless Steel",)}),
            Line("Yeti", "Rambler", {"material": ("Insulated Stainless Steel",)}),
            Line("Stanley", "IceFlow", {"material": ("Insulated Stainless Steel",)}),
            Line("Owala", "FreeSip", {"material": ("Insulated Stainless Steel",)}),
            Line("Contigo", "Autoseal", {"material": ("BPA-Free Plastic", "Insulated Stainless Steel")}),
            Line("Nalgene", "Sustain", {"material": ("BPA-Free Plastic",)}),
        ),
        slots=(
            Slot("capacity", tuple(v(f"{n} oz", f"{n} oz", f"{n}oz", f"{n} ounce") for n in (12, 18, 24, 32, 40))),
            Slot(
                "material",
                (
                    v("Insulated Stainless Steel", "insulated", "stainless steel"),
                    v("BPA-Free Plastic", "plastic", "bpa free"),
                ),
            ),
            Slot(
                "lid", (v("Straw Lid", "with straw", "straw lid"), v("Flex Cap", "flex cap"), v("Chug Lid", "chug lid"))
            ),
            Slot("age", (v(""), v("Kids", "kids", "for kids")), "front"),
            Slot("color", COLORS, "front"),
        ),
        titles=(
            "{brand} {line} {age} {material} Water Bottle with {lid}, {capacity}, {color}",
            "{brand} {line} {capacity} {age} Water Bottle - {material}, {lid} - {color}",
        ),
        related=("backpacks",),
    ),
    Category(
        name="coffee makers",
        nouns=("coffee maker", "coffee machine"),
        lines=(
            Line(
                "Keurig",
                "K-Elite",
                {"type": ("Single Serve Coffee Maker",), "capacity": ("1-Cup",)},
                ("k elite", "keurig k elite"),
            ),
            Line(
                "Keurig",
                "K-Mini",
                {"type": ("Single Serve Coffee Maker",), "capacity": ("1-Cup",)},
                ("k mini", "keurig k mini"),
            ),
            Line(
                "Cuisinart",
                "DCC-3200",
                {"type": ("Drip Coffee Maker",), "capacity": ("14-Cup",)},
                ("dcc-3200", "cuisinart 3200"),
            ),
            Line(
                "Cuisinart",
                "Grind & Brew",
                {"type": ("Drip Coffee Maker",), "capacity": ("12-Cup",), "feature": ("with Grinder",)},
                ("grind and brew", "cuisinart grind and brew"),
            ),
            Line(
                "Breville",
                "Barista Express",
                {"type": ("Espresso Machine",), "feature": ("with Grinder", "with Milk Frother"), "capacity": ("",)},
            ),
            Line(
                "Breville",
                "Bambino Plus",
                {"type": ("Espresso Machine",), "feature": ("with Milk Frother",), "capacity": ("",)},
            ),
            Line("Mr. Coffee", "Easy Measure", {"type": ("Drip Coffee Maker",), "capacity": ("12-Cup", "5-Cup")}),
            Line(
                "De'Longhi",
                "Dedica",
                {"type": ("Espresso Machine",), "feature": ("with Milk Frother",), "capacity": ("",)},
            ),
            Line("Bodum", "Chambeau", {"type": ("French Press",), "capacity": ("8-Cup", "3-Cup"), "feature": ("",)}),
        ),
        slots=(
            Slot(
                "type",
                (
                    v(
                        "Single Serve Coffee Maker",
                        "single serve coffee maker",
                        "k cup coffee maker",
                        "pod coffee maker",
                    ),
                    v("Drip Coffee Maker", "drip coffee maker"),
                    v("Espresso Machine", "espresso machine", "espresso maker"),
                    v("French Press", "french press"),
                ),
                "noun",
            ),
            Slot(
                "capacity",
                (
                    v(""),
                    v("1-Cup", "single cup"),
                    v("3-Cup", "3 cup"),
                    v("5-Cup", "5 cup"),
                    v("8-Cup", "8 cup"),
                    v("12-Cup", "12 cup"),
                    v("14-Cup", "14 cup"),
                ),
            ),
            Slot(
                "feature",
                (
                    v(""),
                    v("with Grinder", "with grinder", "with built in grinder"),
                    v("Programmable", "programmable"),
                    v("with Milk Frother", "with milk frother", "with frother"),
                ),
            ),
            Slot("color", (v("Black"), v("Stainless Steel", "stainless steel"), v("White"), v("Red")), "front"),
        ),
        titles=(
            "{brand} {line} {capacity} {type} {feature}, {color}",
            "{brand} {capacity} {type}, {line}, {feature} - {color}",
        ),
        related=("coffee", "blenders"),
    ),
    Category(
        name="coffee",
        nouns=("coffee",),
        lines=(
            Line("Starbucks", "Pike Place", {"roast": ("Medium Roast",)}),
            Line("Starbucks", "Veranda Blend", {"roast": ("Light Roast",)}),
            Line("Starbucks", "French Roast", {"roast": ("Dark Roast",)}),
            Line("Lavazza", "Super Crema", {"roast": ("Medium Roast",)}),
            Line("Peet's", "Major Dickason's", {"roast": ("Dark Roast",)}),
            Line("Death Wish", "", {"roast": ("Dark Roast",)}),
            Line("Dunkin'", "Original Blend", {"roast": ("Medium Roast",)}),
            Line("Folgers", "Classic Roast", {"roast": ("Medium Roast",)}),
        ),
        slots=(
            Slot(
                "roast",
                (
                    v("Light Roast", "light roast", "blonde roast"),
                    v("Medium Roast", "medium roast"),
                    v("Dark Roast", "dark roast"),
                ),
            ),
            Slot(
                "form",
                (
                    v("Whole Bean", "whole bean coffee", "coffee beans"),
                    v("Ground", "ground coffee"),
                    v("K-Cup Pods", "k cups", "coffee pods", "k cup pods"),
                ),
                "noun",
            ),
            Slot("decaf", (v(""), v("Decaf", "decaf")), "front"),
            Slot("size", (v("12 oz", "12 oz", "12oz"), v("20 oz", "20 oz"), v("2 lb", "2 lb", "2lb", "2 pound"))),
        ),
        titles=(
            "{brand} {line} {roast} {form} Coffee {decaf}, {size}",
            "{brand} {decaf} {form} Coffee, {roast}, {line} - {size} Bag",
        ),
        related=("coffee makers",),
    ),
    Category(
        name="blenders",
        nouns=("blender",),
        lines=(
            Line("Vitamix", "5200", {"type": ("Countertop Blender",), "power": ("1400W",)}, ("vitamix 5200",)),
            Line(
                "Vitamix",
                "E310 Explorian",
                {"type": ("Countertop Blender",), "power": ("1400W",)},
                ("e310", "vitamix e310"),
            ),
            Line(
                "Ninja",
                "Professional BL610",
                {"type": ("Countertop Blender",), "power": ("1000W",)},
                ("bl610", "ninja professional"),
            ),
            Line("Ninja", "Nutri Ninja", {"type": ("Personal Blender",), "power": ("900W",)}),
            Line(
                "NutriBullet", "Pro 900", {"type": ("Personal Blender",), "power": ("900W",)}, ("nutribullet pro 900",)
            ),
            Line("Oster", "Pro 1200", {"type": ("Countertop Blender",), "power": ("1200W",)}, ("oster pro 1200",)),
            Line("KitchenAid", "K150", {"type": ("Countertop Blender",), "power": ("650W",)}, ("kitchenaid k150",)),
            Line("Braun", "MultiQuick 7", {"type": ("Immersion Blender",), "power": ("500W",)}),
            Line("BlendJet", "2", {"type": ("Portable Blender",), "power": ("270W",)}),
        ),
        slots=(
            Slot(
                "type",
                (
                    v("Countertop Blender", "countertop blender"),
                    v("Personal Blender", "personal blender", "smoothie blender"),
                    v("Immersion Blender", "immersion blender", "hand blender", "stick blender"),
                    v("Portable Blender", "portable blender"),
                ),
                "noun",
            ),
            Slot("power", tuple(v(f"{w}W", f"{w}w", f"{w} watt") for w in (270, 500, 650, 900, 1000, 1200, 1400))),
            Slot("color", (v("Black"), v("Red"), v("White"), v("Slate", "gray", "slate")), "front"),
        ),
        titles=("{brand} {line} {power} {type}, {color}", "{brand} {line} {type} - {power} Motor, {color}"),
        related=("coffee makers",),
    ),
    Category(
        name="vacuum cleaners",
        nouns=("vacuum", "vacuum cleaner"),
        lines=(
            Line("Dyson", "V8", {"type": ("Cordless Stick",)}, ("dyson v8",)),
            Line("Dyson", "V15 Detect", {"type": ("Cordless Stick",)}),
            Line("Dyson", "Ball Animal 3", {"type": ("Upright",)}),
            Line("Shark", "Navigator NV352", {"type": ("Upright",)}, ("shark navigator", "nv352")),
            Line("Shark", "AI Ultra", {"type": ("Robot",)}),
            Line("Bissell", "CleanView", {"type": ("Upright",)}),
            Line("Bissell", "Pet Hair Eraser", {"type": ("Handheld", "Upright"), "pet": ("for Pet Hair",)}),
            Line("iRobot", "Roomba j7+", {"type": ("Robot",)}, ("roomba j7", "roomba j7+")),
            Line("iRobot", "Roomba 694", {"type": ("Robot",)}, ("roomba 694",)),
            Line("eufy", "RoboVac 11S", {"type": ("Robot",)}, ("robovac 11s", "eufy robovac")),
        ),
        slots=(
            Slot(
                "type",
                (
                    v("Cordless Stick", "cordless stick", "cordless"),
                    v("Upright", "upright"),
                    v("Robot", "robot"),
                    v("Handheld", "handheld", "hand held"),
                ),
                "front",
            ),
            Slot("pet", (v(""), v("for Pet Hair", "for pet hair", "pet"))),
            Slot("bagless", (v(""), v("Bagless", "bagless"))),
            Slot("color", (v("Purple"), v("Gray", "gray"), v("Black"), v("Blue")), "front"),
        ),
        titles=(
            "{brand} {line} {bagless} {type} Vacuum Cleaner {pet}, {color}",
            "{brand} {line} {type} Vacuum {pet}, {bagless}, {color}",
        ),
        related=(),
    ),
    Category(
        name="keyboards",
        nouns=("keyboard",),
        lines=(
            Line("Logitech", "MX Keys", {"type": ("",), "switch": ("",), "connection": ("Wireless",)}),
            Line(
                "Logitech",
                "K380",
                {"type": ("",), "switch": ("",), "connection": ("Wireless",)},
                ("k380", "logitech k380"),
            ),
            Line(
                "Logitech",
                "G915 TKL",
                {"type": ("Mechanical",), "connection": ("Wireless",)},
                ("g915", "logitech g915"),
            ),
            Line("Razer", "BlackWidow V4", {"type": ("Mechanical",), "connection": ("Wired",)}),
            Line("Razer", "Huntsman Mini", {"type": ("Mechanical",), "connection": ("Wired",)}),
            Line("Corsair", "K70 RGB", {"type": ("Mechanical",), "connection": ("Wired",)}, ("k70", "corsair k70")),
            Line("Keychron", "K2", {"type": ("Mechanical",)}, ("keychron k2",)),
            Line("Keychron", "Q1", {"type": ("Mechanical",)}, ("keychron q1",)),
            Line("Apple", "Magic Keyboard", {"type": ("",), "switch": ("",), "connection": ("Wireless",)}),
        ),
        slots=(
            Slot("type", (v(""), v("Mechanical", "mechanical"))),
            Slot(
                "switch",
                (
                    v(""),
                    v("Red Switches", "red switches", "red switch"),
                    v("Brown Switches", "brown switches", "brown switch"),
                    v("Blue Switches", "blue switches", "clicky blue switches"),
                ),
            ),
            Slot("connection", (v("Wireless", "wireless", "bluetooth"), v("Wired", "wired", "usb")), "front"),
            Slot("color", (v("Black"), v("White"), v("Space Gray", "gray", "space gray")), "front"),
        ),
        titles=(
            "{brand} {line} {connection} {type} Keyboard {switch}, {color}",
            "{brand} {line} {type} {connection} Keyboard - {color}, {switch}",
        ),
        related=("laptops",),
    ),
    Category(
        name="bicycles",
        nouns=("bike", "bicycle"),
        lines=(
            Line("Huffy", "Stone Mountain", {"type": ("Mountain Bike",), "wheel": ("24-Inch", "26-Inch")}),
            Line("Schwinn", "Koen", {"type": ("Kids Bike",), "wheel": ("12-Inch", "16-Inch", "20-Inch")}),
            Line("Schwinn", "Discover", {"type": ("Hybrid Bike",), "wheel": ("700c",)}),
            Line("Trek", "Marlin 5", {"type": ("Mountain Bike",), "wheel": ("27.5-Inch", "29-Inch")}),
            Line("Trek", "FX 2", {"type": ("Hybrid Bike",), "wheel": ("700c",)}, ("trek fx 2",)),
            Line("Giant", "Contend AR", {"type": ("Road Bike",), "wheel": ("700c",)}),
            Line("Royalbaby", "Freestyle", {"type": ("Kids Bike",), "wheel": ("12-Inch", "16-Inch")}),
            Line("Mongoose", "Legion L20", {"type": ("BMX Bike",), "wheel": ("20-Inch",)}),
        ),
        slots=(
            Slot(
                "type",
                (
                    v("Mountain Bike", "mountain bike"),
                    v("Road Bike", "road bike"),
                    v("Hybrid Bike", "hybrid bike"),
                    v("Kids Bike", "kids bike", "bike for kids"),
                    v("BMX Bike", "bmx bike"),
                ),
                "noun",
            ),
            Slot(
                "wheel",
                tuple(v(f"{n}-Inch", f"{n} inch", f'{n}"') for n in ("12", "16", "20", "24", "26", "27.5", "29"))
                + (v("700c"),),
            ),
            Slot("gender", GENDER, "front"),
            Slot("color", COLORS, "front"),
        ),
        titles=(
            "{brand} {line} {gender} {type}, {wheel} Wheels, {color}",
            "{brand} {line} {wheel} {type} for {gender_plain} - {color}",
        ),
        related=(),
    ),
)

CATEGORY_BY_NAME = {c.name: c for c in CATEGORIES}


# --------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------


def sample_product(rng: random.Random, cat: Category) -> Product:
    """Draw a random product of ``cat``, respecting each line's restrictions."""
    line = rng.choice(cat.lines)
    product: Product = {"line": line}
    for slot in cat.slots:
        allowed = line.only.get(slot.name)
        values = [val for val in slot.values if allowed is None or val.title in allowed]
        product[slot.name] = rng.choice(values)
    return product


def render_title(rng: random.Random, cat: Category, product: Product) -> str:
    """Fill one of the category's title templates and tidy the punctuation."""
    line = product["line"]
    assert isinstance(line, Line)
    fields = {name: val.title for name, val in product.items() if isinstance(val, Value)}
    fields["brand"] = line.brand
    fields["line"] = line.name
    gender = fields.get("gender", "")
    fields["gender_plain"] = gender.replace("'s", "").replace("'", "") or "Adults"
    title = rng.choice(cat.titles).format(**fields)
    title = re.sub(r"\s+", " ", title)
    title = re.sub(r"\s+([,)\]])", r"\1", title)
    title = re.sub(r"([(\[])\s+", r"\1", title)
    title = re.sub(r"(,\s*)+,", ",", title)
    title = re.sub(r",\s*-", " -", title)
    title = re.sub(r"-\s*,", "-", title)
    title = re.sub(r"\(\)|\[\]", "", title)
    title = re.sub(r"\s+", " ", title)
    return title.strip(" ,-")


def query_keys(product: Product) -> list[str]:
    """Attributes of ``product`` that a query can mention."""
    keys = ["brand"]
    line = product["line"]
    assert isinstance(line, Line)
    if line.name:
        keys.append("line")
    keys += [name for name, val in product.items() if isinstance(val, Value) and val.query]
    return keys


def attribute(product: Product, key: str) -> object:
    """The value of ``key`` used to decide relevance."""
    line = product["line"]
    assert isinstance(line, Line)
    if key == "brand":
        return line.brand
    return product[key]


def typo(rng: random.Random, text: str) -> str:
    """Introduce one keyboard slip into a random alphabetic word of length >= 5."""
    words = text.split()
    candidates = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap":
        w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    elif kind == "drop":
        w = w[:j] + w[j + 1 :]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


def render_query(rng: random.Random, cat: Category, product: Product, keys: list[str]) -> str:
    """Write the shopper's query that mentions ``keys`` of ``product``."""
    line = product["line"]
    assert isinstance(line, Line)
    front: list[str] = []
    head: list[str] = []
    mid: list[str] = []
    back: list[str] = []
    noun = rng.choice(cat.nouns)
    if "line" in keys:
        head.append(rng.choice(line.query_forms()))
    elif "brand" in keys:
        head.append(rng.choice(brand_forms(line.brand)))
    for slot in cat.slots:
        if slot.name not in keys:
            continue
        value = product[slot.name]
        assert isinstance(value, Value)
        form = rng.choice(value.query)
        if slot.position == "noun":
            noun = form
        elif form.startswith(("for ", "with ")) or slot.position == "back":
            back.append(form)
        elif slot.position == "front":
            front.append(form)
        else:
            mid.append(form)
    if cat.noun_optional and "line" in keys and rng.random() < 0.5 and noun in cat.nouns:
        noun = ""
    parts = front + head + mid + [noun] + back
    if rng.random() < FILLER_RATE:
        if rng.random() < 0.6:
            parts.insert(0, rng.choice(FRONT_FILLERS))
        else:
            parts.append(rng.choice(BACK_FILLERS))
    query = " ".join(p for p in parts if p)
    if rng.random() < TYPO_RATE:
        query = typo(rng, query)
    return query


def choose_keys(rng: random.Random, product: Product) -> list[str]:
    """Pick which attributes (1 to 3) the query mentions."""
    available = query_keys(product)
    k = min(len(available), rng.choices((1, 2, 3), weights=(0.35, 0.45, 0.2))[0])
    keys = rng.sample(available, k)
    if "line" in keys and "brand" in keys:
        keys.remove("brand")
    return keys


def sample_matching(
    rng: random.Random, cat: Category, source: Product, keys: list[str], differ: int, tries: int = 400
) -> Product | None:
    """Draw a product agreeing with ``source`` on ``keys`` except ``differ`` of them."""
    for _ in range(tries):
        candidate = sample_product(rng, cat)
        mismatches = sum(attribute(candidate, k) != attribute(source, k) for k in keys)
        if mismatches == differ:
            return candidate
    return None


def word_overlap(a: str, b: str) -> int:
    return len(set(a.lower().split()) & set(re.split(r"[\s,()/\-]+", b.lower())))


def other_category_title(rng: random.Random, cat: Category, query: str) -> tuple[str, str]:
    """An easy negative: a title from another (often related) category."""
    if cat.related and rng.random() < RELATED_NEGATIVE_SHARE:
        other = CATEGORY_BY_NAME[rng.choice(cat.related)]
    else:
        other = rng.choice([c for c in CATEGORIES if c.name != cat.name])
    titles = [render_title(rng, other, sample_product(rng, other)) for _ in range(12)]
    best = max(word_overlap(query, t) for t in titles)
    return rng.choice([t for t in titles if word_overlap(query, t) == best]), other.name


def make_group(rng: random.Random) -> list[Row] | None:
    """One query with a positive and a negative row, or None if sampling failed."""
    cat = rng.choice(CATEGORIES)
    source = sample_product(rng, cat)
    keys = choose_keys(rng, source)
    query = render_query(rng, cat, source, keys)
    positive = sample_matching(rng, cat, source, keys, differ=0) or source
    rows = [{"query": query, "title": render_title(rng, cat, positive), "category": cat.name, "label": 1}]
    if rng.random() < HARD_NEGATIVE_SHARE:
        negative = sample_matching(rng, cat, source, keys, differ=1)
        if negative is None:
            return None
        rows.append({"query": query, "title": render_title(rng, cat, negative), "category": cat.name, "label": 0})
    else:
        title, other = other_category_title(rng, cat, query)
        rows.append({"query": query, "title": title, "category": other, "label": 0})
    if rows[0]["title"] == rows[1]["title"]:
        return None
    return rows


def generate(seed: int = SEED) -> dict[str, list[Row]]:
    """Build all splits; each query is unique and lives in exactly one split."""
    rng = random.Random(seed)
    n_groups = sum(SPLIT_SIZES.values()) // 2
    groups: list[list[Row]] = []
    seen: set[str] = set()
    while len(groups) < n_groups:
        group = make_group(rng)
        if group is None or group[0]["query"] in seen:
            continue
        seen.add(str(group[0]["query"]))
        groups.append(group)
    rng.shuffle(groups)
    splits: dict[str, list[Row]] = {}
    start = 0
    for name, size in SPLIT_SIZES.items():
        rows = [row for group in groups[start : start + size // 2] for row in group]
        rng.shuffle(rows)
        splits[name] = rows
        start += size // 2
    return splits


def main(argv: list[str] | None = None) -> None:
    parser = generator_parser(__doc__, DEFAULT_OUT, SEED)
    args = parser.parse_args(argv)
    splits = generate(args.seed)
    write_splits(splits, args.out)
    report_splits(splits, args.out, detail=lambda rows: f"{sum(int(row['label']) for row in rows)} positive")


if __name__ == "__main__":
    main()
