"""Generate the bundled extractive summarization dataset.

Documents are short product reviews and local news items. Each holds exactly three sentences that
carry its key facts (a review's rating, verdict, main strength, main drawback or price; a news
item's decision, amount, schedule, scale or jobs) among three to six sentences of colour (when the
parcel came, the weather during the meeting, a neighbour's opinion), in random order: the key
sentences are not simply the first ones, so lead-3 is a weak summary. Filler sentences share the
document's vocabulary and often hold numbers too, and some are near misses that read like key
facts but are about something else (a rating of the writer's old product, last year's rejected
plan, another town's jobs), so the key ones are found by what they say.

Each key fact has phrasings that every split uses and phrasings that only valid and test use:
half of the key sentences of a valid/test document are worded in a way no training document
shows ("Final score: 4 out of 5 for the Aero.", "Crews will break ground in May ..."), so the
test measures whether a model learned what a key fact is rather than its templates.

Every row is ``{"id", "genre", "title", "document", "summary"}``; ``summary`` is the three key
sentences in document order, each copied verbatim from ``document``. A fixed seed makes reruns
byte-identical.

Usage::

    python scripts/make_summarization_data.py [--out DIR] [--seed N]
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltatune.data import generator_parser, report_splits, write_splits

SEED = 99
SPLIT_SIZES = {"train": 600, "valid": 100, "test": 150}
KEY_SENTENCES = 3
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "deltatune" / "data" / "summarization"

Slots = dict[str, str]
Maker = Callable[[random.Random, Slots], str]
Phrasings = tuple[tuple[str, ...], tuple[str, ...]]  # (phrasings in every split, phrasings only in valid/test)
HELD_OUT_SHARE = 0.5  # of the key sentences of a valid/test document, phrased in a way training never shows

PRODUCTS = (("Aero", "wireless earbuds", "earbuds"), ("Nimbus", "portable speaker", "speakers"),
            ("Orbit", "smartwatch", "smartwatches"), ("Glide", "robot vacuum", "vacuums"),
            ("Brew", "coffee grinder", "grinders"), ("Trail", "hiking backpack", "backpacks"),
            ("Volt", "power bank", "power banks"), ("Lumen", "desk lamp", "lamps"),
            ("Crest", "electric kettle", "kettles"), ("Pulse", "fitness tracker", "trackers"))  # fmt: skip
BRANDS = ("Northpeak", "Cedarline", "Bluewave", "Harbor", "Summit", "Brightcart")
PARTS = ("hinge", "charging port", "strap", "lid", "power button", "zip")
STRENGTHS = ("the battery easily lasts {h} hours between charges", "it is noticeably quieter than my old one",
             "the build feels solid and well finished", "setup took less than five minutes with the app",
             "the sound is clear even at full volume")  # fmt: skip
AUDIENCES = ("commuters", "students", "small kitchens", "frequent travellers", "beginners")
RELATIVES = ("sister", "neighbour", "father", "colleague", "flatmate")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MONTHS = ("March", "April", "May", "June", "September", "October")
CITIES = ("Millbrook", "Eastport", "Riverton", "Oakdale", "Fairhaven", "Ashford", "Lakeside", "Westfield")
PROJECTS = (("road repairs", "miles of resurfaced road"), ("a new library", "reading rooms"),
            ("bike lanes", "miles of protected bike lanes"), ("school upgrades", "new classrooms"),
            ("a water treatment plant", "megaliters of daily capacity"),
            ("park renovations", "new playgrounds"))  # fmt: skip


def review(rng: random.Random, held_out: bool) -> tuple[str, list[str], list[str]]:
    line, product, plural = rng.choice(PRODUCTS)
    s: Slots = {"p": f"{rng.choice(BRANDS)} {line} {product}", "short": f"the {line}", "plural": plural,
                "n": str(rng.randint(1, 5)), "h": str(rng.randint(8, 40)), "price": f"${rng.randint(19, 249)}",
                "part": rng.choice(PARTS), "w": str(rng.randint(2, 9)), "aud": rng.choice(AUDIENCES),
                "rel": rng.choice(RELATIVES), "day": rng.choice(DAYS)}  # fmt: skip
    s["strength"] = rng.choice(STRENGTHS).format(**s)
    keys: list[Phrasings] = [
        (("I give the {p} {n} out of 5 stars.", "My rating for {short} is {n} stars out of 5."),
         ("{n} stars from me for the {p}.", "Final score: {n} out of 5 for {short}.")),
        (("Overall, {short} is good value for {aud}.", "I would recommend the {p} to {aud}.",
          "All in all, {short} is a solid choice for {aud}."),
         ("For {aud}, the {p} is an easy recommendation.", "It is a sensible pick for {aud}.")),
        (("Its main strength is that {strength}.",),
         ("What I like most is that {strength}.", "The best thing about it is that {strength}.")),
        (("The main drawback is that the {part} broke after {w} weeks.",
          "Sadly the {part} stopped working after {w} weeks."),
         ("My only complaint is the {part}, which failed after {w} weeks.",
          "After {w} weeks the {part} gave out, and that is my one real gripe.")),
        (("At {price} it costs less than most rival {plural}.", "For {price} you get more than the price suggests."),
         ("It is fairly priced at {price}.", "Paying {price} for it felt like a bargain.")),
    ]  # fmt: skip
    fillers: list[Maker] = [
        lambda r, s: f"I ordered it on a {s['day']} afternoon.",
        lambda r, s: "The box arrived a day later than promised.",
        lambda r, s: f"My {s['rel']} has an older model of the same brand.",
        lambda r, s: f"I have tried many {s['plural']} over the years.",
        lambda r, s: f"I am writing this review after {r.randint(2, 8)} weeks of use.",
        lambda r, s: "The instructions were printed in four languages.",
        lambda r, s: "The courier left the parcel with a neighbour.",
        lambda r, s: f"It sat on the shelf for {r.randint(2, 6)} days before I opened it.",
        lambda r, s: f"I usually read a few reviews of {s['plural']} before I buy one.",
        lambda r, s: "The packaging was mostly cardboard, which I liked.",
        # near misses: they read like key facts but are about another product or someone else
        lambda r, s: f"My old {s['plural']} only deserved {r.randint(1, 3)} stars.",
        lambda r, s: f"A friend paid ${r.randint(19, 249)} for a rival model last year.",
        lambda r, s: f"The {s['part']} on my previous one broke within a month.",
        lambda r, s: f"Some say the older version was better value for {r.choice(AUDIENCES)}.",
    ]
    title = rng.choice((f"Review: {s['p']}", f"{s['p']} after a month", f"Is the {s['p']} worth it?"))
    return title, phrase(rng, keys, s, held_out), fill(rng, fillers, s)


def news(rng: random.Random, held_out: bool) -> tuple[str, list[str], list[str]]:
    project, unit = rng.choice(PROJECTS)
    s: Slots = {"city": rng.choice(CITIES), "proj": project, "unit": unit,
                "m": f"{rng.randint(2, 60)}.{rng.randint(1, 9)}",
                "day": rng.choice(DAYS), "month": rng.choice(MONTHS), "year": str(rng.randint(2026, 2030)),
                "count": str(rng.randint(3, 40)), "jobs": str(rng.randint(2, 30) * 10),
                "votes": f"{rng.randint(5, 9)} to {rng.randint(1, 4)}"}  # fmt: skip
    keys: list[Phrasings] = [
        (("The {city} council approved a ${m} million plan for {proj} on {day}.",),
         ("On {day}, councillors in {city} signed off on ${m} million for {proj}.",
          "A ${m} million budget for {proj} won approval in {city} on {day}.")),
        (("Work is set to begin in {month} and should be finished by {year}.",),
         ("Construction starts in {month}, with completion planned for {year}.",
          "Crews will break ground in {month} and aim to wrap up by {year}.")),
        (("The plan adds {count} {unit} across {city}.",),
         ("{city} will gain {count} {unit} under the plan.", "In total, {count} {unit} are included in the plan.")),
        (("Officials expect the project to create about {jobs} local jobs.",),
         ("Around {jobs} jobs are expected to come with the project.",
          "The work should bring roughly {jobs} jobs to the area.")),
        (("The measure passed by a vote of {votes}.",),
         ("Council members voted {votes} in favour.", "It was approved {votes} after a long debate.")),
    ]  # fmt: skip
    fillers: list[Maker] = [
        lambda r, s: "Residents gathered outside the town hall before the meeting.",
        lambda r, s: f"The meeting started {r.randint(5, 25)} minutes late.",
        lambda r, s: "It rained for most of the afternoon.",
        lambda r, s: f"'We have waited a long time for this,' said one of {r.randint(20, 90)} residents present.",
        lambda r, s: "Several council members wore blue ribbons.",
        lambda r, s: f"The town hall was built in {r.randint(1890, 1960)}.",
        lambda r, s: "Coffee and biscuits were served during the break.",
        lambda r, s: f"A local choir sang before the session, as it has every {s['month']}.",
        lambda r, s: "Parking near the hall was hard to find.",
        lambda r, s: f"Some residents said they had followed the debate about {s['proj']} online.",
        # near misses: earlier or other towns' decisions, with amounts, dates and votes of their own
        lambda r, s: (
            f"Last year the council rejected a ${r.randint(2, 60)}.{r.randint(1, 9)} million plan for "
            f"{r.choice(PROJECTS)[0]}."
        ),
        lambda r, s: f"A similar project in {r.choice(CITIES)} created about {r.randint(2, 30) * 10} jobs.",
        lambda r, s: f"Work on the previous project began in {r.choice(MONTHS)} {r.randint(2015, 2022)}.",
        lambda r, s: f"An earlier proposal failed by a vote of {r.randint(1, 4)} to {r.randint(5, 9)}.",
    ]
    title = rng.choice((f"{s['city']} approves {s['proj']}", f"Council backs {s['proj']} in {s['city']}"))
    return title, phrase(rng, keys, s, held_out), fill(rng, fillers, s)


def phrase(rng: random.Random, keys: list[Phrasings], s: Slots, held_out: bool) -> list[str]:
    """``KEY_SENTENCES`` of the key facts, each in one of its phrasings: the seen ones, or (valid
    and test, half of the time) one that no training document uses."""
    out = []
    for seen, unseen in rng.sample(keys, KEY_SENTENCES):
        pool = unseen if held_out and rng.random() < HELD_OUT_SHARE else seen
        out.append(rng.choice(pool).format(**s))
    return out


def fill(rng: random.Random, fillers: list[Maker], s: Slots) -> list[str]:
    return [f(rng, s) for f in rng.sample(fillers, rng.randint(3, 6))]


def make_document(rng: random.Random, doc_id: int, held_out: bool) -> dict[str, Any]:
    genre = rng.choice(("review", "news"))
    title, keys, fillers = (review if genre == "review" else news)(rng, held_out)
    sentences = keys + fillers
    rng.shuffle(sentences)
    summary = [x for x in sentences if x in keys]
    return {"id": f"d{doc_id}", "genre": genre, "title": title, "document": " ".join(sentences),
            "summary": " ".join(summary)}  # fmt: skip


def generate(seed: int = SEED) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    splits, doc_id = {}, 0
    for name, size in SPLIT_SIZES.items():
        rows = []
        for _ in range(size):
            rows.append(make_document(rng, doc_id, held_out=name != "train"))
            doc_id += 1
        splits[name] = rows
    return splits


def main(argv: list[str] | None = None) -> None:
    parser = generator_parser(__doc__, DEFAULT_OUT, SEED)
    args = parser.parse_args(argv)
    splits = generate(args.seed)
    write_splits(splits, args.out)
    report_splits(splits, args.out, "documents")


if __name__ == "__main__":
    main()
