"""Generate the bundled extractive question-answering (``mrc``) dataset.

Passages read like a shop's help-center or product pages: shipping, returns, warranty, customer
support, and product specifications over several product kinds. Each passage states four to six
facts of one topic in shuffled order, several of the same type (two delivery times, two prices, a
battery life next to a charging time), so an answer cannot be found by its shape alone: the
question decides which span is meant. Questions are phrased in several ways per fact.

Every row is ``{"id", "topic", "title", "context", "question", "answer", "answer_start"}``, where
``answer`` is the exact substring ``context[answer_start : answer_start + len(answer)]``. A passage
yields one or two questions, and all rows of a passage live in one split. A fixed seed makes
reruns byte-identical.

Usage::

    python scripts/make_mrc_data.py [--out DIR] [--seed N]
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltatune.data import generator_parser, report_splits, write_splits

SEED = 2024
SPLIT_PASSAGES = {"train": 800, "valid": 120, "test": 160}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "deltatune" / "data" / "mrc"

Row = dict[str, Any]
Gen = Callable[[random.Random, dict[str, str]], str]

SHOPS = ("Northpeak", "Lumen & Co", "Harbor Goods", "Cedarline", "Brightcart", "Oakridge Outfitters",
         "Pixelport", "Maple Street Home", "Summit Gear", "Bluewave Electronics")  # fmt: skip
CARRIERS = ("UPS", "FedEx", "DHL", "USPS", "Royal Mail", "DPD")
CITIES = ("Columbus, Ohio", "Reno, Nevada", "Memphis, Tennessee", "Leipzig", "Rotterdam", "Dallas, Texas")
NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "ten", "twelve")
COLORS = ("black", "white", "silver", "graphite", "rose gold", "navy blue", "forest green", "sand beige", "red")
ACCESSORIES = ("a USB-C cable", "a travel pouch", "a wall adapter", "two spare ear tips", "a quick start guide",
               "a cleaning cloth", "a carrying case", "a wrist strap")  # fmt: skip


def price(rng: random.Random, low: int, high: int) -> str:
    return f"${rng.randint(low, high)}.{rng.choice(('99', '95', '49', '00'))}"


def days(rng: random.Random, low: int, high: int, unit: str = "business days") -> str:
    a = rng.randint(low, high - 1)
    b = rng.randint(a + 1, high)
    return rng.choice((f"{a} to {b} {unit}", f"{a}-{b} {unit}"))


def hours_of_day(rng: random.Random) -> str:
    start, end = rng.choice((8, 9, 10)), rng.choice((5, 6, 7, 8))
    return f"{start} am to {end} pm"


@dataclass(frozen=True)
class Fact:
    """One fact a passage can state: its value, the sentences stating it, the questions asking it."""

    key: str
    value: Gen
    sentences: tuple[str, ...]  # each holds "{v}" once, plus other {slots} of the passage
    questions: tuple[str, ...]


def f(key: str, value: Gen, sentences: tuple[str, ...], questions: tuple[str, ...]) -> Fact:
    return Fact(key, value, sentences, questions)


SHIPPING = (
    f("standard_time", lambda r, s: days(r, 2, 8),
      ("Standard shipping usually takes {v}.", "Orders sent by standard shipping arrive in {v}."),
      ("How long does standard shipping take?", "When will a standard shipping order arrive?",
       "how many days for standard delivery")),
    f("standard_cost", lambda r, s: price(r, 3, 9),
      ("Standard shipping costs {v} per order.", "We charge {v} for standard shipping."),
      ("How much is standard shipping?", "What does standard shipping cost?")),
    f("express_time", lambda r, s: r.choice(("the next business day", "1 to 2 business days", "2 business days")),
      ("Express orders are delivered in {v}.", "With express shipping your parcel arrives in {v}."),
      ("How fast is express shipping?", "How long does express delivery take?")),
    f("express_cost", lambda r, s: price(r, 12, 29),
      ("Express shipping is available for {v}.", "Express delivery costs {v}."),
      ("How much does express shipping cost?", "what is the price of express delivery")),
    f("free_threshold", lambda r, s: f"${r.choice((25, 35, 49, 50, 75, 99))}",
      ("Orders over {v} ship for free.", "Shipping is free on orders above {v}."),
      ("What is the minimum order for free shipping?", "How much do I need to spend to get free shipping?")),
    f("carrier", lambda r, s: r.choice(CARRIERS),
      ("Parcels are handed to {v} for delivery.", "We ship all domestic orders with {v}."),
      ("Which carrier delivers the orders?", "what shipping company do you use")),
    f("cutoff", lambda r, s: r.choice(("1 p.m.", "2 p.m.", "3 p.m.", "noon")) + " " + r.choice(("EST", "CET", "PST")),
      ("Orders placed before {v} leave our warehouse the same day.", "The same-day dispatch cutoff is {v}."),
      ("What is the cutoff time for same-day dispatch?", "By what time must I order for same day shipping?")),
    f("warehouse", lambda r, s: r.choice(CITIES),
      ("All orders ship from our warehouse in {v}.", "Our fulfilment center is located in {v}."),
      ("Where do orders ship from?", "Where is the warehouse?")),
)  # fmt: skip

RETURNS = (
    f("window", lambda r, s: f"{r.choice((14, 30, 45, 60, 90))} days",
      ("You can return most items within {v} of delivery.", "Unused items may be sent back up to {v} after delivery."),
      ("How long do I have to return an item?", "What is the return window?", "within how many days can i return")),
    f("refund_time", lambda r, s: days(r, 3, 14),
      ("Refunds are processed within {v} of receiving the return.", "Your refund is issued in {v}."),
      ("How long does a refund take?", "When will I get my money back?")),
    f("refund_method", lambda r, s: r.choice(("the original payment method", "store credit", "a bank transfer")),
      ("Refunds go back to {v}.", "We refund returns to {v}."),
      ("How is the refund paid?", "Where does my refund go?")),
    f("restocking_fee", lambda r, s: f"{r.choice((10, 15, 20, 25))}%",
      ("Opened electronics carry a restocking fee of {v}.", "A {v} restocking fee applies to opened items."),
      ("Is there a restocking fee?", "How much is the restocking fee for opened items?")),
    f("return_shipping", lambda r, s: r.choice(("free", price(r, 4, 9))),
      ("Return shipping is {v} for customers in the US.", "Sending an item back costs {v}."),
      ("How much does return shipping cost?", "Do I pay for return shipping?")),
    f("non_returnable", lambda r, s: r.choice(("gift cards and opened software", "personalised items",
                                                "underwear and swimwear", "clearance items")),
      ("Please note that {v} cannot be returned.", "We do not accept returns of {v}."),
      ("Which items cannot be returned?", "what can't be returned")),
)  # fmt: skip

WARRANTY = (
    f("length", lambda r, s: r.choice(NUMBER_WORDS[:4]) + " years",
      ("Every {product} is covered by a limited warranty of {v}.", "The {product} comes with {v} of warranty."),
      ("How long is the warranty?", "How many years of warranty does the {product} have?")),
    f("covers", lambda r, s: r.choice(("manufacturing defects", "defects in materials and workmanship",
                                       "battery failures and manufacturing defects")),
      ("The warranty covers {v}.", "It protects you against {v}."),
      ("What does the warranty cover?", "What is covered by the warranty?")),
    f("excludes", lambda r, s: r.choice(("water damage and accidental drops", "normal wear and tear",
                                         "cosmetic scratches", "damage from unauthorised repairs")),
      ("It does not cover {v}.", "Claims for {v} are excluded."),
      ("What is not covered by the warranty?", "What does the warranty exclude?")),
    f("claim", lambda r, s: r.choice(("contact support with your order number", "fill in the form on our website",
                                      "email a photo of the receipt")),
      ("To make a claim, {v}.", "To start a warranty claim, please {v}."),
      ("How do I make a warranty claim?", "how can I claim the warranty")),
    f("extension", lambda r, s: price(r, 19, 59),
      ("You can extend the warranty by three years for {v}.", "An extended plan costs {v}."),
      ("How much does the extended warranty cost?", "What is the price of extending the warranty?")),
)  # fmt: skip

SUPPORT = (
    f("hours", lambda r, s: "Monday to Friday, " + hours_of_day(r),
      ("Our support team is available {v}.", "You can reach an agent {v}."),
      ("When is customer support open?", "What are the support hours?")),
    f("phone", lambda r, s: f"1-800-555-{r.randint(100, 9999):04d}",
      ("Call us at {v} for help with an order.", "Our hotline number is {v}."),
      ("What is the support phone number?", "Which number do I call for help?")),
    f("email", lambda r, s: f"{r.choice(('help', 'support', 'care'))}@{s['domain']}",
      ("You can also write to {v}.", "Questions by email go to {v}."),
      ("What email address can I write to?", "What is the support email?")),
    f("reply_time", lambda r, s: r.choice(("within 24 hours", "within one business day", "within 48 hours")),
      ("We answer emails {v}.", "Emails usually get a reply {v}."),
      ("How quickly do you reply to emails?", "When will I get an answer to my email?")),
    f("chat", lambda r, s: r.choice(("the bottom right corner of every page", "the Help menu", "the mobile app")),
      ("Live chat can be opened from {v}.", "The chat window is found in {v}."),
      ("Where can I open live chat?", "where is the live chat")),
)  # fmt: skip

SPECS = (
    f("weight", lambda r, s: r.choice((f"{r.randint(120, 950)} grams", f"{r.randint(1, 4)}.{r.randint(1, 9)} kg")),
      ("The {product} weighs {v}.", "At only {v}, the {product} is easy to carry."),
      ("How much does the {product} weigh?", "What is the weight of the {product}?")),
    f("battery", lambda r, s: f"up to {r.randint(6, 60)} hours",
      ("The battery lasts {v} on a single charge.", "A full charge gives {v} of use."),
      ("How long does the battery last?", "What is the battery life of the {product}?")),
    f("charge_time", lambda r, s: r.choice(("about 90 minutes", "2 hours", "2.5 hours", "45 minutes")),
      ("Charging from empty takes {v}.", "It recharges fully in {v}."),
      ("How long does it take to charge?", "How long is the charging time?")),
    f("colors", lambda r, s: ", ".join(r.sample(COLORS, 2)) + " and " + r.choice(COLORS[-3:]),
      ("The {product} comes in {v}.", "It is sold in {v}."),
      ("Which colors is the {product} available in?", "What colours can I choose?")),
    f("in_box", lambda r, s: " and ".join(r.sample(ACCESSORIES, 2)),
      ("The box includes {v}.", "Included in the package are {v}."),
      ("What is included in the box?", "What comes in the package?")),
    f("water", lambda r, s: r.choice(("IPX4", "IPX5", "IPX7", "IP67", "IP68")),
      ("It is rated {v} for water resistance.", "The {product} has an {v} water resistance rating."),
      ("Is the {product} waterproof?", "What is the water resistance rating?")),
    f("connectivity", lambda r, s: r.choice(("Bluetooth 5.3", "Bluetooth 5.0", "Wi-Fi 6", "USB-C and Bluetooth 5.2")),
      ("It connects over {v}.", "Connection is via {v}."),
      ("How does the {product} connect?", "What connectivity does it support?")),
    f("price", lambda r, s: price(r, 29, 399),
      ("The {product} retails for {v}.", "It is priced at {v}."),
      ("How much does the {product} cost?", "What is the price of the {product}?")),
)  # fmt: skip

PRODUCTS = (("Aero", "wireless earbuds"), ("Pulse", "fitness tracker"), ("Nimbus", "portable speaker"),
            ("Vista", "action camera"), ("Orbit", "smartwatch"), ("Echo", "noise-cancelling headphones"),
            ("Trail", "GPS bike computer"), ("Spark", "electric toothbrush"), ("Glide", "wireless mouse"),
            ("Beam", "reading light"))  # fmt: skip

TOPICS: dict[str, tuple[Fact, ...]] = {
    "shipping": SHIPPING, "returns": RETURNS, "warranty": WARRANTY, "support": SUPPORT, "specs": SPECS,
}  # fmt: skip
TITLES = {
    "shipping": "Shipping and delivery", "returns": "Returns and refunds", "warranty": "{Product} warranty",
    "support": "Contact customer support", "specs": "{Product} specifications",
}  # fmt: skip


def make_passage(rng: random.Random, topic: str, pid: int) -> list[Row]:
    """One passage of ``topic`` and its one or two questions."""
    shop = rng.choice(SHOPS)
    line, kind = rng.choice(PRODUCTS)
    slots = {"product": f"{shop.split()[0]} {line} {kind}", "domain": shop.split()[0].lower() + ".com"}
    facts = rng.sample(TOPICS[topic], rng.randint(4, min(6, len(TOPICS[topic]))))
    context, spans = "", {}
    intro = rng.choice((f"{shop} help center.", f"Last updated in {rng.choice(('March', 'June', 'October'))}.", ""))
    if topic in ("specs", "warranty"):
        intro = f"Meet the {slots['product']}."
    if intro:
        context = intro
    for fact in facts:
        value = fact.value(rng, slots)
        template = rng.choice(fact.sentences)
        head, tail = template.split("{v}")
        head, tail = head.format(**slots), tail.format(**slots)
        sentence = head + value + tail
        sentence = sentence[0].upper() + sentence[1:]
        start = len(context) + (1 if context else 0) + len(head)
        context = f"{context} {sentence}" if context else sentence
        spans[fact.key] = (value, start, fact)
    rows = []
    for key in rng.sample(list(spans), rng.choice((1, 2))):
        value, start, fact = spans[key]
        assert context[start : start + len(value)] == value
        question = rng.choice(fact.questions).format(**slots)
        rows.append({"id": f"p{pid}-{key}", "topic": topic,
                     "title": TITLES[topic].format(Product=slots["product"]), "context": context,
                     "question": question, "answer": value, "answer_start": start})  # fmt: skip
    return rows


def generate(seed: int = SEED) -> dict[str, list[Row]]:
    """All splits; the passages of one split are never seen by another."""
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    splits: dict[str, list[Row]] = {}
    pid = 0
    for name, n_passages in SPLIT_PASSAGES.items():
        rows: list[Row] = []
        for _ in range(n_passages):
            rows += make_passage(rng, rng.choice(topics), pid)
            pid += 1
        rng.shuffle(rows)
        splits[name] = rows
    return splits


def main(argv: list[str] | None = None) -> None:
    parser = generator_parser(__doc__, DEFAULT_OUT, SEED)
    args = parser.parse_args(argv)
    splits = generate(args.seed)
    write_splits(splits, args.out)
    report_splits(splits, args.out, "questions")


if __name__ == "__main__":
    main()
