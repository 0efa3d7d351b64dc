#!/usr/bin/env python3
"""Writes studies/data/sentiment.csv: a small, balanced, synthetic sentiment set (header
`text,label`, 1 = positive, 0 = negative) for the quick start. Sentences are built from
templates and vocabulary written for this project (reviews of products, films, restaurants,
hotels, books and apps); the generator is seeded, so rerunning it gives the same file.

usage: python3 scripts/make-sentiment-csv.py [OUT] [--per-class N]
"""
import csv
import random
import sys

DOMAINS = {
    "film": {
        "things": ["the movie", "this film", "the sequel", "the documentary", "the new thriller",
                   "this comedy", "the remake", "the animated feature", "the indie drama", "the horror flick"],
        "parts": ["the acting", "the script", "the soundtrack", "the ending", "the pacing",
                  "the dialogue", "the cinematography", "the lead performance", "the plot", "the special effects"],
        "pos_detail": ["I laughed from start to finish", "the cast has real chemistry",
                       "it kept me on the edge of my seat", "every scene feels earned",
                       "I would happily watch it again", "the twist actually surprised me"],
        "neg_detail": ["I checked my watch every ten minutes", "the jokes never land",
                       "half the audience walked out", "the story goes nowhere",
                       "I almost fell asleep", "the twist was obvious from the trailer"],
    },
    "restaurant": {
        "things": ["the restaurant", "this cafe", "the new bistro", "the pizza place", "the sushi bar",
                   "our neighbourhood diner", "the food truck", "the steakhouse", "the bakery", "the ramen shop"],
        "parts": ["the service", "the pasta", "the dessert", "the coffee", "the staff",
                  "the portions", "the atmosphere", "the wine list", "the soup", "the burger"],
        "pos_detail": ["the waiter remembered our names", "everything tasted fresh",
                       "we are already planning our next visit", "the prices are more than fair",
                       "the chef came out to say hello", "the bread alone is worth the trip"],
        "neg_detail": ["we waited an hour for cold food", "the table was sticky",
                       "the bill had two mistakes on it", "the fries were soggy and stale",
                       "nobody came to take our order", "the fish smelled off"],
    },
    "product": {
        "things": ["this laptop", "the blender", "these headphones", "the vacuum cleaner", "this phone case",
                   "the coffee maker", "the running shoes", "this backpack", "the electric kettle", "the desk lamp"],
        "parts": ["the battery", "the build quality", "the design", "the price", "the instructions",
                  "the customer support", "the packaging", "the sound", "the zipper", "the power button"],
        "pos_detail": ["it arrived two days early", "it works exactly as described",
                       "I bought a second one for my sister", "it still looks new after a year",
                       "setup took less than five minutes", "it is worth every penny"],
        "neg_detail": ["it broke after a week", "it stopped charging on day three",
                       "the return process was a nightmare", "it feels cheap and flimsy",
                       "half the parts were missing", "it overheats constantly"],
    },
    "hotel": {
        "things": ["the hotel", "this resort", "the guesthouse", "our rental apartment", "the hostel",
                   "the beach cottage", "the airport hotel", "the lodge", "the inn", "the spa hotel"],
        "parts": ["the room", "the breakfast", "the front desk", "the bed", "the pool",
                  "the view", "the bathroom", "the location", "the wifi", "the housekeeping"],
        "pos_detail": ["the staff upgraded us for free", "the sheets were spotless",
                       "we slept like babies", "the beach was a short walk away",
                       "check-in took two minutes", "I would stay here again without hesitation"],
        "neg_detail": ["the air conditioning never worked", "we found hair in the shower",
                       "the walls were paper thin", "the wifi dropped every few minutes",
                       "the room smelled of smoke", "they lost our reservation"],
    },
    "book": {
        "things": ["this novel", "the biography", "the cookbook", "this mystery", "the memoir",
                   "the fantasy series", "this self-help book", "the short story collection", "the textbook", "the graphic novel"],
        "parts": ["the writing", "the characters", "the first chapter", "the illustrations", "the ending",
                  "the translation", "the world building", "the cover", "the research", "the narrator"],
        "pos_detail": ["I read it in a single weekend", "I keep recommending it to friends",
                       "the characters feel like old friends", "I underlined half the pages",
                       "I could not put it down", "it made me cry in the best way"],
        "neg_detail": ["I gave up after fifty pages", "the characters are paper thin",
                       "it reads like a first draft", "the chapters repeat themselves",
                       "I kept losing track of the plot", "it was a chore to finish"],
    },
    "app": {
        "things": ["this app", "the new update", "the game", "the budgeting tool", "the music service",
                   "the photo editor", "the fitness tracker app", "the language course", "the weather app", "the banking app"],
        "parts": ["the interface", "the notifications", "the sync", "the search", "the offline mode",
                  "the login", "the dark theme", "the tutorials", "the subscription price", "the widgets"],
        "pos_detail": ["it has not crashed once", "it replaced three other apps for me",
                       "my whole family uses it now", "it is fast even on my old phone",
                       "the developers actually listen to feedback", "it makes my mornings easier"],
        "neg_detail": ["it crashes every time I open it", "it drains my battery in hours",
                       "the ads are unbearable", "it logged me out twice a day",
                       "support never answered my emails", "the update deleted my data"],
    },
}

POS_ADJ = ["great", "excellent", "wonderful", "fantastic", "superb", "delightful", "impressive",
           "lovely", "brilliant", "outstanding", "charming", "solid", "fabulous", "terrific"]
NEG_ADJ = ["terrible", "awful", "disappointing", "dreadful", "mediocre", "poor", "frustrating",
           "boring", "horrible", "useless", "overpriced", "sloppy", "annoying", "bland"]
INTENS = ["", "really ", "truly ", "absolutely ", "genuinely ", "pretty ", "incredibly "]
POS_VERB = ["loved", "enjoyed", "adored", "was impressed by", "was blown away by", "really liked"]
NEG_VERB = ["hated", "was disappointed by", "was let down by", "could not stand", "was annoyed by", "gave up on"]
POS_CLOSE = ["Highly recommended.", "Five stars.", "Two thumbs up.", "Worth it.", "Would recommend.", ""]
NEG_CLOSE = ["Avoid it.", "One star.", "Not recommended.", "What a waste.", "Never again.", ""]
TIME = ["", "Honestly, ", "After a month, ", "To be fair, ", "Overall, ", "Frankly, ", "So far, "]


MILD_NEG = ["a bit slow", "a little noisy", "slightly pricey", "not perfect", "a bit plain"]
MILD_POS = ["nice enough", "decent", "fine", "okay", "pleasant enough"]


def cap(s):
    return s[0].upper() + s[1:]


def be(noun, past=False):
    """`is`/`are` (or `was`/`were`) agreeing with a noun phrase like "the recipes"."""
    last = noun.split()[-1]
    plural = last.endswith("s") and not last.endswith("ss") and last != "series"
    return ("were" if plural else "was") if past else ("are" if plural else "is")


def a(phrase):
    """The indefinite article for `phrase` ("a" or "an") followed by it."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def sentence(rng, positive):
    d = DOMAINS[rng.choice(sorted(DOMAINS))]
    thing, part = rng.choice(d["things"]), rng.choice(d["parts"])
    adj = rng.choice(POS_ADJ if positive else NEG_ADJ)
    inten = rng.choice(INTENS)
    detail = rng.choice(d["pos_detail"] if positive else d["neg_detail"])
    verb = rng.choice(POS_VERB if positive else NEG_VERB)
    close = rng.choice(POS_CLOSE if positive else NEG_CLOSE)
    t = rng.randrange(8)
    if t == 0:
        s = f"{rng.choice(TIME)}{thing} {be(thing)} {inten}{adj}; {detail}."
    elif t == 1:
        s = f"I {verb} {thing}, and {part} {be(part, True)} {inten}{adj}."
    elif t == 2:
        s = f"{part} of {thing} {be(part)} {inten}{adj}, {detail}."
    elif t == 3:
        # contrast: the overall verdict decides the label
        mild = rng.choice(MILD_NEG if positive else MILD_POS)
        s = f"{part} {be(part, True)} {mild}, but overall {thing} {be(thing)} {inten}{adj}."
    elif t == 4:
        neg_of = rng.choice(NEG_ADJ if positive else POS_ADJ)
        s = f"{thing} {be(thing, True)} not {neg_of} at all; {detail}."
    elif t == 5:
        s = f"{detail}, so {thing} gets {a(inten + adj)} review from me."
    elif t == 6:
        s = f"What {a(adj)} experience with {thing}. {cap(detail)}."
    else:
        s = f"{rng.choice(TIME)}I {verb} {part}; {thing} {be(thing)} {inten}{adj}."
    s = cap(s.replace("  ", " ").strip())
    return f"{s} {close}".strip()


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = args[0] if args else "studies/data/sentiment.csv"
    per_class = 150
    if "--per-class" in sys.argv:
        per_class = int(sys.argv[sys.argv.index("--per-class") + 1])
    rng = random.Random(20260127)
    rows, seen = [], set()
    for label in (1, 0):
        n = 0
        while n < per_class:
            s = sentence(rng, label == 1)
            if s.lower() in seen:
                continue
            seen.add(s.lower())
            rows.append((s, label))
            n += 1
    rng.shuffle(rows)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows(rows)
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
