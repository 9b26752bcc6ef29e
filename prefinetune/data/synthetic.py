"""A small, seeded, offline multi-task suite of templated English classification tasks.

Six tasks whose signal sits in the words and their relations, so a small BERT learns them in a few
hundred updates: sentiment (2 classes, adjective lexicon), topic (4, domain vocabulary), question type
(4, wh-words), acceptability (2, word order / agreement / doubled words), paraphrase (pair, 2:
synonyms and voice vs. a changed participant), and NLI (pair, 3: stated / negated / unmentioned
property). Labels are balanced; a fixed hash-chosen 1/8 of all possible examples is reserved for
dev, so train and dev never share an example; the same seed gives the same bytes, so re-writing an
unchanged suite touches no file.

    python -c "from prefinetune.data.synthetic import write_suite; print(write_suite('runs/synthetic', 3000, 0))"

Files: <root>/<task>/train.jsonl and dev.jsonl, one {"text", "text_pair", "label"} object per line
(label = label name; text_pair is null for single-sentence tasks). `synthetic_task_configs()` gives the
matching TaskConfig dicts, with paths relative to <root> (= data.root).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Callable, Optional, Union

__all__ = ["SYNTHETIC_TASKS", "generate_split", "write_suite", "synthetic_task_configs"]

Example = tuple[str, Optional[str]]

NAMES = ["anna", "ben", "carla", "david", "emma", "frank", "grace", "henry", "iris", "jack", "kate",
         "liam", "maria", "nora", "oscar", "paul", "rosa", "sam", "tina", "victor"]
PLACES = ["park", "kitchen", "garden", "office", "station", "library", "market", "museum", "harbor",
          "school"]

# ---------------------------------------------------------------- sentiment (2)

POSITIVE = ["wonderful", "excellent", "delightful", "brilliant", "charming", "superb", "lovely",
            "fantastic", "pleasant", "great", "enjoyable", "beautiful", "amazing", "impressive"]
NEGATIVE = ["terrible", "awful", "boring", "dreadful", "horrible", "dull", "disappointing", "poor",
            "annoying", "bad", "unpleasant", "miserable", "mediocre", "painful"]
REVIEWED = ["movie", "meal", "hotel", "book", "concert", "show", "game", "trip", "album", "play",
            "restaurant", "lecture"]
SENTIMENT_TEMPLATES = [
    "the {noun} was {adj} .", "i found the {noun} really {adj} .", "what a {adj} {noun} !",
    "{name} said the {noun} was {adj} .", "honestly , the {noun} felt {adj} .",
    "our {noun} last night was {adj} .", "everyone agreed the {noun} was quite {adj} .",
]


def _sentiment(rng: random.Random, label: str) -> Example:
    adj = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
    text = rng.choice(SENTIMENT_TEMPLATES).format(noun=rng.choice(REVIEWED), adj=adj, name=rng.choice(NAMES))
    return text, None


# ---------------------------------------------------------------- topic (4)

TOPICS = {
    "sports": (["the striker", "the coach", "the team", "the goalkeeper", "the runner", "the captain"],
               ["won", "lost", "played", "trained for", "scored in", "prepared for"],
               ["the match", "the final", "the league game", "the tournament", "the race", "the derby"]),
    "science": (["the chemist", "the lab", "the physicist", "the biologist", "the researcher", "the telescope"],
                ["measured", "observed", "analyzed", "discovered", "modeled", "tested"],
                ["the molecule", "the particle", "the cell sample", "the comet", "the gene", "the reaction"]),
    "business": (["the company", "the bank", "the investor", "the startup", "the retailer", "the board"],
                 ["sold", "bought", "funded", "acquired", "priced", "merged with"],
                 ["the shares", "the stock", "the firm", "the new product", "the market stake", "the bonds"]),
    "food": (["the chef", "the baker", "the waiter", "the cook", "the kitchen crew", "the farmer"],
             ["cooked", "baked", "served", "seasoned", "tasted", "grilled"],
             ["the soup", "the bread", "the pasta", "the salad", "the cake", "the roast chicken"]),
}
WHEN = ["yesterday", "on monday", "last week", "this morning", "in the evening", "again", "today",
        "on friday", "last month", "this year", "at noon"]


def _topic(rng: random.Random, label: str) -> Example:
    subjects, verbs, objects = TOPICS[label]
    text = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(WHEN)} ."
    return text, None


# ---------------------------------------------------------------- question type (4)

QUESTION_TEMPLATES = {
    "person": ["who {verb} the {thing} ?", "who is the {role} of the {org} ?",
               "which person {verb} the {thing} ?", "whom did {name} meet at the {place} ?"],
    "place": ["where did {name} {base} the {thing} ?", "where is the {org} located ?",
              "which city hosts the {org} ?", "in what country was the {thing} made ?"],
    "time": ["when did {name} {base} the {thing} ?", "what year was the {org} founded ?",
             "when does the {place} open ?", "at what time did {name} leave the {place} ?"],
    "number": ["how many {things} did {name} {base} ?", "how much did the {thing} cost ?",
               "what is the number of {things} in the {place} ?", "how many people work at the {org} ?"],
}
Q_VERBS = [("painted", "paint"), ("built", "build"), ("wrote", "write"), ("found", "find"),
           ("designed", "design"), ("sold", "sell")]
Q_THINGS = [("bridge", "bridges"), ("song", "songs"), ("picture", "pictures"), ("boat", "boats"),
            ("letter", "letters"), ("house", "houses"), ("poem", "poems"), ("map", "maps"),
            ("statue", "statues"), ("machine", "machines")]
Q_ROLES = ["leader", "founder", "director", "owner", "president"]
Q_ORGS = ["club", "museum", "company", "orchestra", "university", "hospital"]


def _question(rng: random.Random, label: str) -> Example:
    verb, base = rng.choice(Q_VERBS)
    thing, things = rng.choice(Q_THINGS)
    text = rng.choice(QUESTION_TEMPLATES[label]).format(
        verb=verb, base=base, thing=thing, things=things, role=rng.choice(Q_ROLES), org=rng.choice(Q_ORGS),
        name=rng.choice(NAMES), place=rng.choice(PLACES))
    return text, None


# ---------------------------------------------------------------- acceptability (2)

ANIMALS = [("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("horse", "horses"), ("fox", "foxes"),
           ("child", "children"), ("teacher", "teachers"), ("farmer", "farmers"), ("girl", "girls"),
           ("boy", "boys"), ("duck", "ducks"), ("sailor", "sailors")]
ACTIONS = [("runs", "run"), ("sleeps", "sleep"), ("sings", "sing"), ("waits", "wait"),
           ("jumps", "jump"), ("eats", "eat"), ("plays", "play"), ("rests", "rest"), ("swims", "swim"),
           ("laughs", "laugh"), ("walks", "walk"), ("hides", "hide")]
MODIFIERS = ["in the park", "near the river", "every morning", "at night", "by the door",
             "on the hill", "after lunch", "in the garden", "with a friend", "under the tree",
             "before dinner", "on sunday"]


def _grammatical(rng: random.Random) -> list[str]:
    """A sentence 'the NOUN VERB ...': subject at 0-1, verb at 2."""
    (one, many), (verb_s, verb) = rng.choice(ANIMALS), rng.choice(ACTIONS)
    plural = rng.random() < 0.5
    subject = ["the", many] if plural else ["the", one]
    return subject + [verb if plural else verb_s] + rng.choice(MODIFIERS).split() + ["."]


def _corrupt(rng: random.Random, words: list[str]) -> list[str]:
    kind = rng.randrange(3)
    if kind == 0:  # subject-verb agreement broken
        for (verb_s, verb) in ACTIONS:
            if words[2] in (verb_s, verb):
                return words[:2] + [verb if words[2] == verb_s else verb_s] + words[3:]
    if kind == 1:  # scrambled word order (punctuation stays last)
        body = list(words[:-1])
        while body == words[:-1]:
            rng.shuffle(body)
        return body + ["."]
    i = rng.randrange(len(words) - 1)  # a doubled word
    return words[: i + 1] + [words[i]] + words[i + 1:]


def _acceptability(rng: random.Random, label: str) -> Example:
    words = _grammatical(rng)
    return " ".join(words if label == "acceptable" else _corrupt(rng, words)), None


# ---------------------------------------------------------------- paraphrase (pair, 2)

SYNONYMS = {"bought": "purchased", "fixed": "repaired", "painted": "colored", "found": "discovered",
            "cleaned": "washed", "sold": "traded"}
OBJECTS = {"old car": "aged car", "small boat": "little boat", "big table": "large table",
           "new bike": "recent bike", "red door": "red gate", "quiet house": "calm house"}


def _active(name: str, verb: str, obj: str, place: str) -> str:
    return f"{name} {verb} the {obj} at the {place} ."


def _passive(name: str, verb: str, obj: str, place: str) -> str:
    return f"the {obj} was {verb} by {name} at the {place} ."


def _paraphrase(rng: random.Random, label: str) -> Example:
    name, verb, obj, place = (rng.choice(NAMES), rng.choice(list(SYNONYMS)), rng.choice(list(OBJECTS)),
                              rng.choice(PLACES))
    first = _active(name, verb, obj, place)
    name2, verb2, obj2, place2 = name, SYNONYMS[verb], OBJECTS[obj], place
    if label == "not_paraphrase":  # the same rewrite, but one participant changes
        what = rng.randrange(3)
        if what == 0:
            name2 = rng.choice([n for n in NAMES if n != name])
        elif what == 1:
            obj2 = OBJECTS[rng.choice([o for o in OBJECTS if o != obj])]
        else:
            place2 = rng.choice([p for p in PLACES if p != place])
    second = (_passive if rng.random() < 0.5 else _active)(name2, verb2, obj2, place2)
    return first, second


# ---------------------------------------------------------------- NLI (pair, 3)

TRAITS = ["tall", "happy", "tired", "hungry", "busy", "calm", "brave", "quiet", "angry", "friendly"]
NLI_ROLES = ["doctor", "pilot", "singer", "lawyer", "student", "nurse", "painter", "baker"]


def _nli(rng: random.Random, label: str) -> Example:
    name, role = rng.choice(NAMES), rng.choice(NLI_ROLES)
    a, b, c = rng.sample(TRAITS, 3)
    premise = rng.choice([f"{name} is a {a} and {b} {role} .", f"the {role} , {name} , is {a} and {b} ."])
    stated = rng.choice([a, b])
    if label == "entailment":
        hypothesis = rng.choice([f"{name} is {stated} .", f"the {role} is {stated} ."])
    elif label == "contradiction":
        hypothesis = rng.choice([f"{name} is not {stated} .", f"the {role} is never {stated} ."])
    else:
        hypothesis = rng.choice([f"{name} is {c} .", f"the {role} is {c} ."])
    return premise, hypothesis


# ---------------------------------------------------------------- the suite

SYNTHETIC_TASKS: dict[str, tuple[list[str], bool, Callable[[random.Random, str], Example]]] = {
    # name: (label names, is a pair task, generator)
    "syn_sentiment": (["negative", "positive"], False, _sentiment),
    "syn_topic": (["sports", "science", "business", "food"], False, _topic),
    "syn_question": (["person", "place", "time", "number"], False, _question),
    "syn_acceptability": (["unacceptable", "acceptable"], False, _acceptability),
    "syn_paraphrase": (["not_paraphrase", "paraphrase"], True, _paraphrase),
    "syn_nli": (["entailment", "neutral", "contradiction"], True, _nli),
}


def _in_dev(text: str, pair: Optional[str]) -> bool:
    """A fixed 1-in-8 share of all possible examples is reserved for dev, so train and dev never overlap."""
    digest = hashlib.sha256(json.dumps([text, pair]).encode("utf-8")).digest()
    return digest[0] % 8 == 0


def generate_split(task: str, rows: int, seed: int, split: str) -> list[dict]:
    """`rows` label-balanced examples of `task` for `split` ("train" or "dev"), the same for the same seed."""
    label_names, _, make = SYNTHETIC_TASKS[task]
    rng = random.Random(f"{seed}:{task}:{split}")
    labels = [label_names[i % len(label_names)] for i in range(rows)]
    rng.shuffle(labels)
    out = []
    for label in labels:
        while True:
            text, pair = make(rng, label)
            if _in_dev(text, pair) == (split == "dev"):
                break
        out.append({"text": text, "text_pair": pair, "label": label})
    return out


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _write_if_changed(path: Path, data: bytes) -> str:
    if path.is_file() and path.read_bytes() == data:
        return "unchanged"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return "written"


def write_suite(root: Union[str, Path], train_rows: int, seed: int, dev_rows: int = 300) -> dict[str, str]:
    """Write every task's train.jsonl / dev.jsonl under `root`; returns {relative path: written|unchanged}."""
    root = Path(root)
    report = {}
    for task in SYNTHETIC_TASKS:
        for split, rows in (("train", train_rows), ("dev", dev_rows)):
            rel = f"{task}/{split}.jsonl"
            report[rel] = _write_if_changed(root / rel, _jsonl(generate_split(task, rows, seed, split)))
    return report


def synthetic_task_configs() -> list[dict]:
    """Validated TaskConfig dicts for the suite (paths relative to the suite root = data.root)."""
    from prefinetune.recipe.config import TaskConfig

    configs = []
    for task, (label_names, pair, _) in SYNTHETIC_TASKS.items():
        configs.append(TaskConfig.model_validate({
            "name": task, "family": "classification", "format": "jsonl", "label_names": label_names,
            "splits": {"train": f"{task}/train.jsonl", "dev": f"{task}/dev.jsonl"},
            "columns": {"text": "text", "text_pair": "text_pair" if pair else None, "label": "label"},
        }).model_dump(mode="json"))
    return configs
